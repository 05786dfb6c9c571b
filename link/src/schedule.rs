//! [`Schedule`]: how one direction of a link changes over a run.

use std::time::Duration;

use crate::{Error, LinkParams};

/// The parameters of one direction of a link over time: `base` from the start, then each
/// change from its offset (time since the [`Pipe`](crate::Pipe) was created) until the
/// next change.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Schedule {
    base: LinkParams,
    /// Sorted by offset, offsets distinct and above zero.
    changes: Vec<(Duration, LinkParams)>,
}

impl From<LinkParams> for Schedule {
    fn from(params: LinkParams) -> Self {
        Schedule::constant(params)
    }
}

impl Schedule {
    /// A link that keeps `params` for the whole run.
    pub fn constant(params: LinkParams) -> Self {
        Schedule { base: params, changes: Vec::new() }
    }

    /// Adds a change to `params` at `offset` from the start. A change at zero replaces the
    /// base; a change at an offset already present replaces that change.
    pub fn then_at(mut self, offset: Duration, params: LinkParams) -> Self {
        if offset.is_zero() {
            self.base = params;
            return self;
        }
        match self.changes.binary_search_by_key(&offset, |(at, _)| *at) {
            Ok(i) => self.changes[i].1 = params,
            Err(i) => self.changes.insert(i, (offset, params)),
        }
        self
    }

    /// The parameters at the start.
    pub fn base(&self) -> &LinkParams {
        &self.base
    }

    /// The changes after the start, in time order.
    pub fn changes(&self) -> &[(Duration, LinkParams)] {
        &self.changes
    }

    /// The parameters in force `elapsed` after the start.
    pub fn params_at(&self, elapsed: Duration) -> &LinkParams {
        self.changes.iter().rev().find(|(at, _)| *at <= elapsed).map_or(&self.base, |(_, p)| p)
    }

    /// Applies `f` to the base and to every change (used to apply user overrides to a
    /// whole profile).
    pub fn map(mut self, mut f: impl FnMut(&mut LinkParams)) -> Self {
        f(&mut self.base);
        for (_, p) in &mut self.changes {
            f(p);
        }
        self
    }

    /// Validates the base and every change.
    pub fn validate(&self) -> Result<(), Error> {
        self.base.validate()?;
        for (at, p) in &self.changes {
            p.validate().map_err(|e| Error::InvalidParams(format!("change at {at:?}: {e}")))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.base)?;
        for (at, p) in &self.changes {
            write!(f, "; from {at:?}: {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_follow_the_changes_in_time_order() {
        let s = Duration::from_secs;
        let a = LinkParams::default().with_rate(3_000_000);
        let b = LinkParams::default().with_rate(1_000_000);
        let sched = Schedule::constant(a).then_at(s(20), a).then_at(s(10), b);
        assert_eq!(sched.params_at(Duration::ZERO), &a);
        assert_eq!(sched.params_at(s(9)), &a);
        assert_eq!(sched.params_at(s(10)), &b);
        assert_eq!(sched.params_at(s(19)), &b);
        assert_eq!(sched.params_at(s(20)), &a);
        assert_eq!(sched.changes().len(), 2);
    }
}
