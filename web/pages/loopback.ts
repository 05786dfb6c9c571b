// Publisher and player joined by an in-memory transport: real capture, encoders, decoders,
// canvas and WebAudio, no network. ?codec=av1 to try AV1.
import { Session } from '../src/session.js';
import { memoryPair } from '../src/transport.js';
import { Publisher } from '../src/media/publisher.js';
import { Player } from '../src/media/player.js';
import { exposeStats, renderStats, showError } from './common.js';

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const { a, b } = memoryPair();
  const [playerSession, pubSession] = await Promise.all([Session.open(a, 'client'), Session.open(b, 'server')]);
  const url = 'https://loopback.invalid/demo/live';
  const publisher = await Publisher.start({
    url,
    namespace: ['demo', 'live'],
    useSession: pubSession,
    announce: false,
    codec: params.get('codec') === 'av1' ? 'av1' : 'h264',
    preview: document.getElementById('preview') as HTMLVideoElement,
    onStats: (s) => renderStats(document.getElementById('pubstats'), s),
  });
  const player = await Player.start({
    url,
    useSession: playerSession,
    canvas: document.getElementById('video') as HTMLCanvasElement,
    onStats: (s) => renderStats(document.getElementById('stats'), s),
    onError: (e) => showError(e.message, e.kind),
  });
  exposeStats(player.stats);
  (window as unknown as { tiermeshPublisherStats: object }).tiermeshPublisherStats = publisher.stats;
}

main().catch((e) => {
  exposeStats({ state: 'error', errors: [(e as Error).message] });
  showError((e as Error).message);
});
