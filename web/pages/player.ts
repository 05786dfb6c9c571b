// The player page: ?url=https://host:port/<broadcast>&hash=<certificate sha-256>.
import { Player, PlayerError, type PlayerStats } from '../src/media/player.js';
import { readCanvasBarcode } from '../src/media/barcode.js';
import { exposeStats, pageConfig, renderStats, showError } from './common.js';

const failed: Partial<PlayerStats> & { errorKind?: string } = {
  state: 'connecting',
  framesDecoded: 0,
  framesDrawn: 0,
  audioFramesDecoded: 0,
  errors: [],
};
exposeStats(failed);

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = pageConfig();
  } catch (e) {
    fail(e as Error, 'config');
    return;
  }
  document.getElementById('name')!.textContent = new URL(cfg.url).pathname;
  const canvas = document.getElementById('video') as HTMLCanvasElement;
  // For tests and tools: the frame number of tiermesh's test pattern on the canvas now.
  (window as unknown as { tiermeshReadBarcode: () => number | null }).tiermeshReadBarcode = () => readCanvasBarcode(canvas);
  const tierSel = document.getElementById('tier') as HTMLSelectElement;
  const fixed = cfg.params.get('tier');
  let player: Player;
  try {
    player = await Player.start({
      url: cfg.url,
      certificateHash: cfg.hash,
      canvas,
      audio: cfg.params.get('audio') !== '0',
      startTier: fixed !== null && fixed !== 'auto' ? Number(fixed) : cfg.params.get('start') === 'highest' ? 'highest' : 'lowest',
      abr: fixed !== null && fixed !== 'auto' ? false : cfg.params.get('hold') ? { holdMs: Number(cfg.params.get('hold')) } : {},
      onStats: (s) => renderStats(document.getElementById('stats'), s),
      onError: (e) => showError(e.message, e.kind),
    });
  } catch (e) {
    fail(e as Error, e instanceof PlayerError ? e.kind : 'error');
    return;
  }
  exposeStats(player.stats);
  for (const [i, name] of player.stats.tiers.entries()) tierSel.add(new Option(name, String(i)));
  tierSel.onchange = () => player.setTier(tierSel.value === 'auto' ? 'auto' : Number(tierSel.value));
  document.getElementById('sound')!.onclick = () => void player.resumeAudio();
  (window as unknown as { tiermeshPlayer: Player }).tiermeshPlayer = player;
  // Leave cleanly: the relay sees the session close with no error.
  addEventListener('pagehide', () => player.stop());
}

function fail(e: Error, kind: string): void {
  failed.state = 'error';
  failed.errors!.push(e.message);
  failed.errorKind = kind;
  showError(e.message, kind);
}

void main();
