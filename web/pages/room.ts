// The room page: two people (doctor and patient) see and hear each other.
// ?url=https://host:port/clinic/room-42&hash=<sha-256>&role=doctor (or patient).
// Each side publishes <room>/<role>/source and plays <room>/<other role>: the ladder the
// relay's ingest builds, or the peer's source directly when the relay has no ladder for it.
import { Session } from '../src/session.js';
import { Publisher, PublisherError } from '../src/media/publisher.js';
import { Player, PlayerError, explain, namespaceFromUrl } from '../src/media/player.js';
import { ConnectError } from '../src/transport.js';
import { exposeStats, pageConfig, renderStats, showError, clearError } from './common.js';

const ROLES = ['doctor', 'patient'] as const;

interface RoomStats {
  state: string;
  role: string;
  peer: string;
  errors: string[];
  errorKind?: string;
  framesDecoded: number;
  framesDrawn: number;
  audioFramesDecoded: number;
  publisher?: object;
  playing?: string;
  [k: string]: unknown;
}

const stats: RoomStats = { state: 'connecting', role: '', peer: '', errors: [], framesDecoded: 0, framesDrawn: 0, audioFramesDecoded: 0 };
exposeStats(stats);

function status(text: string): void {
  document.getElementById('status')!.textContent = text;
}

function fail(e: Error, kind: string): void {
  stats.state = 'error';
  stats.errors.push(e.message);
  stats.errorKind = kind;
  showError(e.message, kind);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = pageConfig();
  } catch (e) {
    fail(e as Error, 'config');
    return;
  }
  const role = cfg.params.get('role') ?? 'patient';
  if (!ROLES.includes(role as (typeof ROLES)[number])) {
    fail(new Error(`role must be doctor or patient, got ${role}`), 'config');
    return;
  }
  const peer = role === 'doctor' ? 'patient' : 'doctor';
  const room = namespaceFromUrl(cfg.url);
  stats.role = role;
  stats.peer = peer;
  document.getElementById('name')!.textContent = `${room.join('/')} — you are the ${role}`;
  document.getElementById('peerTitle')!.textContent = peer;

  let session: Session;
  try {
    // ?trace=1 keeps the last 300 control messages in window.tiermeshTrace, for debugging.
    const trace: string[] = [];
    if (cfg.params.get('trace') === '1') (window as unknown as { tiermeshTrace: string[] }).tiermeshTrace = trace;
    session = await Session.connect(cfg.url, {
      certificateHash: cfg.hash,
      onMessage:
        cfg.params.get('trace') === '1'
          ? (dir, m) => {
              const text = JSON.stringify(m, (_k, v) => (v instanceof Uint8Array ? `${v.length} bytes` : typeof v === 'bigint' ? String(v) : v));
              trace.push(`${Math.round(performance.now())} ${dir} ${text.slice(0, 300)}`);
              if (trace.length > 300) trace.shift();
            }
          : undefined,
    });
  } catch (e) {
    const err = e instanceof ConnectError ? e : new Error((e as Error).message);
    fail(err, e instanceof ConnectError ? (e.kind === 'unsupported' ? 'unsupported' : 'connect') : 'connect');
    return;
  }
  void session.closed.then((info) => {
    if (stats.state !== 'error') fail(new Error(`The relay closed the session${info.reason ? `: ${info.reason}` : ''} (code ${info.code}).`), 'closed');
  });

  try {
    const publisher = await Publisher.start({
      url: cfg.url,
      namespace: [...room, role, 'source'],
      useSession: session,
      codec: cfg.params.get('codec') === 'av1' ? 'av1' : 'h264',
      preview: document.getElementById('preview') as HTMLVideoElement,
      onStats: (s) => renderStats(document.getElementById('pubstats'), s),
      onError: (e) => showError(e.message, e.kind),
    });
    stats.publisher = publisher.stats;
    addEventListener('pagehide', () => {
      publisher.stop();
      session.close(0, 'left the room');
    });
  } catch (e) {
    fail(e as Error, e instanceof PublisherError ? e.kind : 'error');
    return;
  }

  // Wait for the peer: their ladder, or their source if the relay builds no ladder.
  stats.state = 'waiting';
  const canvas = document.getElementById('video') as HTMLCanvasElement;
  for (let attempt = 0; ; attempt++) {
    for (const ns of [[...room, peer], [...room, peer, 'source']]) {
      try {
        const player = await Player.start({
          url: cfg.url,
          namespace: ns,
          useSession: session,
          canvas,
          onStats: (s) => {
            Object.assign(stats, s, { state: s.state, role, peer, playing: ns.join('/'), publisher: stats.publisher });
            renderStats(document.getElementById('stats'), s);
          },
          onError: (e) => showError(e.message, e.kind),
        });
        clearError();
        status(`Talking with the ${peer}.`);
        document.getElementById('sound')!.onclick = () => void player.resumeAudio();
        (window as unknown as { tiermeshPlayer: Player }).tiermeshPlayer = player;
        return;
      } catch (e) {
        const err = explain(e, ns.join('/'));
        // The latest reason the peer is not playing yet, for tools and tests.
        (stats as { lastAttempt?: string }).lastAttempt = `${ns.join('/')}: ${err.kind}: ${err.message}`;
        if (err.kind !== 'not-found' && !(err instanceof PlayerError && err.kind === 'catalog')) {
          fail(err, err.kind);
          return;
        }
      }
    }
    status(`Waiting for the ${peer} to join… (${attempt + 1})`);
    await sleep(2000);
  }
}

void main();
