//! The `tiermesh` command.

fn main() -> anyhow::Result<()> {
    Ok(())
}
