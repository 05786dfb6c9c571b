// Shared by the pages: configuration from the query string, the error banner, the stats
// panel and `window.tiermeshStats` for tests.

/** What a page reads from its query string. */
export interface PageConfig {
  /** The relay URL naming the broadcast (`https://host:port/clinic/room-42`, `?jwt=` kept). */
  url: string;
  /** SHA-256 of the relay's development certificate, if given. */
  hash?: string;
  /** All query parameters. */
  params: URLSearchParams;
}

/**
 * Reads `?url=…&hash=…[&jwt=…]`. Without `url`, a page served by the relay uses its own
 * origin and `?broadcast=clinic/room-42`.
 */
export function pageConfig(): PageConfig {
  const params = new URLSearchParams(location.search);
  let url = params.get('url') ?? '';
  if (!url) {
    const b = params.get('broadcast');
    if (b && location.protocol === 'https:') url = `${location.origin}/${b.replace(/^\/+/, '')}`;
  }
  if (!url) throw new Error('No relay URL: open this page with ?url=https://host:port/<broadcast>[&hash=<certificate sha-256>]');
  const u = new URL(url);
  if (u.protocol !== 'https:') throw new Error(`The relay URL must start with https:// (got ${u.protocol}//)`);
  const jwt = params.get('jwt');
  if (jwt && !u.searchParams.has('jwt')) u.searchParams.set('jwt', jwt);
  const hash = params.get('hash') ?? undefined;
  return { url: u.toString(), hash: hash || undefined, params };
}

/** Shows an error banner (and logs it). */
export function showError(message: string, kind = ''): void {
  const el = document.getElementById('error');
  if (el) {
    el.textContent = message;
    el.dataset.kind = kind;
    el.hidden = false;
  }
  console.error(message);
}

/** Clears the error banner. */
export function clearError(): void {
  const el = document.getElementById('error');
  if (el) el.hidden = true;
}

/** Renders a flat stats object as rows of a table. */
export function renderStats(el: HTMLElement | null, stats: object): void {
  if (!el) return;
  const rows: string[] = [];
  for (const [k, v] of Object.entries(stats)) {
    if (k === 'errors' || k === 'switches' || k === 'tiers') continue;
    const text = typeof v === 'object' && v !== null ? Object.entries(v).map(([a, b]) => `${a} ${b}`).join(', ') : String(v);
    rows.push(`<tr><th>${k}</th><td>${escapeHtml(text)}</td></tr>`);
  }
  const s = stats as { switches?: { from: string; to: string; reason: string }[]; errors?: string[] };
  const last = s.switches?.at(-1);
  if (last) rows.push(`<tr><th>last switch</th><td>${escapeHtml(`${last.from} → ${last.to}: ${last.reason}`)}</td></tr>`);
  const err = s.errors?.at(-1);
  if (err) rows.push(`<tr><th>last error</th><td>${escapeHtml(err)}</td></tr>`);
  el.innerHTML = `<table>${rows.join('')}</table>`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** Publishes stats for tests and tools. */
export function exposeStats(stats: object): void {
  (window as unknown as { tiermeshStats: object }).tiermeshStats = stats;
}
