// The publisher page: ?url=https://host:port/<broadcast>&hash=<certificate sha-256>
// [&codec=av1][&width=1280&height=720][&kbps=2500][&ladder=1]. Publishes camera and microphone to
// <broadcast>/source, where the relay's ingest builds the ladder.
import { Publisher, PublisherError, type PublisherStats } from '../src/media/publisher.js';
import { defaultLowerTiers } from '../src/media/ladder.js';
import { exposeStats, pageConfig, renderStats, showError } from './common.js';

const starting: Partial<PublisherStats> & { errorKind?: string } = { state: 'starting', framesEncoded: 0, audioFramesEncoded: 0, errors: [] };
exposeStats(starting);

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = pageConfig();
  } catch (e) {
    fail(e as Error, 'config');
    return;
  }
  const num = (k: string) => (cfg.params.get(k) ? Number(cfg.params.get(k)) : undefined);
  let publisher: Publisher;
  try {
    publisher = await Publisher.start({
      url: cfg.url,
      certificateHash: cfg.hash,
      codec: cfg.params.get('codec') === 'av1' ? 'av1' : 'h264',
      width: num('width'),
      height: num('height'),
      bitrate: num('kbps') !== undefined ? num('kbps')! * 1000 : undefined,
      // ?ladder=1: also encode the default ladder's 360p and 180p here (for a relay without
      // an ingest ladder).
      lowerTiers: cfg.params.get('ladder') === '1' ? defaultLowerTiers() : [],
      preview: document.getElementById('preview') as HTMLVideoElement,
      onStats: (s) => renderStats(document.getElementById('stats'), s),
      onError: (e) => showError(e.message, e.kind),
    });
  } catch (e) {
    fail(e as Error, e instanceof PublisherError ? e.kind : 'error');
    return;
  }
  document.getElementById('name')!.textContent = publisher.namespace.join('/');
  exposeStats(publisher.stats);
  document.getElementById('stop')!.onclick = () => publisher.stop();
  document.getElementById('key')!.onclick = () => publisher.requestKeyFrame();
  (window as unknown as { tiermeshPublisher: Publisher }).tiermeshPublisher = publisher;
  // Leave cleanly: subscribers get PUBLISH_DONE, the relay a clean close.
  addEventListener('pagehide', () => publisher.stop());
}

function fail(e: Error, kind: string): void {
  starting.state = 'error';
  starting.errors!.push(e.message);
  starting.errorKind = kind;
  showError(e.message, kind);
}

void main();
