// The watch page: /watch/<slug> plays /live/<slug>/master.m3u8 with hls.js in
// low-latency mode (or natively where the browser plays HLS itself), and
// flips between live and offline without a reload.
import Hls from 'hls.js';

const slug = decodeURIComponent(location.pathname.replace(/^\/(watch|c)\//, '').replace(/\/.*$/, ''));
const src = `/live/${encodeURIComponent(slug)}/master.m3u8`;
const video = document.getElementById('video') as HTMLVideoElement;
const overlay = document.getElementById('overlay') as HTMLDivElement;
const stateEl = document.getElementById('state') as HTMLSpanElement;
const latencyEl = document.getElementById('latency') as HTMLSpanElement;
(document.getElementById('title') as HTMLHeadingElement).textContent = slug;
document.title = `${slug} — Hearth`;

let hls: Hls | null = null;
let retry: number | undefined;

function setLive(live: boolean, message = ''): void {
  stateEl.textContent = live ? 'live' : 'offline';
  stateEl.classList.toggle('live', live);
  overlay.hidden = live;
  overlay.textContent = message;
}

function scheduleRetry(): void {
  clearTimeout(retry);
  retry = window.setTimeout(start, 3000);
}

function start(): void {
  if (hls) {
    hls.destroy();
    hls = null;
  }
  if (Hls.isSupported()) {
    hls = new Hls({
      lowLatencyMode: true,
      // One part behind the newest one: with blocking playlist reloads each
      // part arrives the moment it is cut, so this is enough buffer on a
      // sound connection; hls.js falls back further if it stalls.
      liveSyncDuration: 0.5,
      liveMaxLatencyDuration: 5,
      maxLiveSyncPlaybackRate: 1.15,
      backBufferLength: 10,
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      setLive(true);
      void video.play().catch(() => undefined);
    });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (!data.fatal) return;
      setLive(false, 'Offline. Waiting for the stream…');
      scheduleRetry();
    });
    hls.on(Hls.Events.BUFFER_EOS, () => {
      setLive(false, 'The stream has ended.');
      scheduleRetry();
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = src;
    video.addEventListener('loadedmetadata', () => setLive(true), { once: true });
    video.addEventListener('error', () => {
      setLive(false, 'Offline. Waiting for the stream…');
      scheduleRetry();
    });
  } else {
    setLive(false, 'This browser cannot play HLS.');
  }
}

// For people and for tests: what hls.js measures.
setInterval(() => {
  if (hls && hls.latency > 0) latencyEl.textContent = `${hls.latency.toFixed(2)} s behind live`;
}, 1000);
(window as unknown as { hearthPlayer: () => Hls | null }).hearthPlayer = () => hls;

setLive(false, 'Connecting…');
start();
