// Publisher and player joined by an in-memory transport: real capture, encoders, decoders,
// canvas and WebAudio, no network. Query: ?codec=av1, ?ladder=1 (publish 180p/360p/720p
// here, as an ingest would), ?kbps=N (a bottleneck from publisher to player; change it
// later through window.tiermeshLink.bps), ?start=highest.
import { Session } from '../src/session.js';
import { MemoryLink, connectWebTransport, memoryPair } from '../src/transport.js';
import { Publisher } from '../src/media/publisher.js';
import { defaultLowerTiers } from '../src/media/ladder.js';
import { Player } from '../src/media/player.js';
import { exposeStats, renderStats, showError } from './common.js';

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const link = new MemoryLink(Number(params.get('kbps') ?? 0) * 1000);
  (window as unknown as { tiermeshLink: MemoryLink }).tiermeshLink = link;
  // ?bridge=https://127.0.0.1:port/x&hash=… runs both sessions over real WebTransport
  // connections joined by a bridge (tests/wt_bridge.py) instead of in memory.
  const bridge = params.get('bridge');
  let playerSession: Session;
  let pubSession: Session;
  if (bridge) {
    const hash = params.get('hash') ?? undefined;
    const ta = await connectWebTransport(bridge, hash);
    // The client's SETUP is what makes the bridge open the other side's control stream.
    const pa = Session.open(ta, 'client');
    const tb = await connectWebTransport(bridge, hash, { acceptControl: true });
    [playerSession, pubSession] = await Promise.all([pa, Session.open(tb, 'server')]);
  } else {
    const { a, b } = memoryPair({ bToA: link });
    [playerSession, pubSession] = await Promise.all([Session.open(a, 'client'), Session.open(b, 'server')]);
  }
  const url = 'https://loopback.invalid/demo/live';
  const ladder = params.get('ladder') === '1';
  const publisher = await Publisher.start({
    url,
    namespace: ['demo', 'live'],
    useSession: pubSession,
    announce: false,
    codec: params.get('codec') === 'av1' ? 'av1' : 'h264',
    lowerTiers: ladder ? defaultLowerTiers() : [],
    preview: document.getElementById('preview') as HTMLVideoElement,
    onStats: (s) => renderStats(document.getElementById('pubstats'), s),
  });
  (window as unknown as { tiermeshPublisherStats: object }).tiermeshPublisherStats = publisher.stats;
  const holdMs = params.get('hold');
  const player = await Player.start({
    url,
    useSession: playerSession,
    canvas: document.getElementById('video') as HTMLCanvasElement,
    startTier: params.get('start') === 'highest' ? 'highest' : 'lowest',
    abr: holdMs ? { holdMs: Number(holdMs) } : {},
    onStats: (s) => renderStats(document.getElementById('stats'), s),
    onError: (e) => showError(e.message, e.kind),
  });
  exposeStats(player.stats);
  (window as unknown as { tiermeshPlayer: Player }).tiermeshPlayer = player;
}

main().catch((e) => {
  exposeStats({ state: 'error', errors: [(e as Error).message] });
  showError((e as Error).message);
});
