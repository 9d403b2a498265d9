// The live player: /live/<slug>/master.m3u8 with hls.js in low-latency mode
// (or natively where the browser plays HLS itself). It retries every 3 s while
// the channel is offline, so the page flips to live without a reload.
// window.hearthPlayer() returns the current hls.js instance (tests and
// bench/latency read its latency).
import Hls from 'hls.js';

export interface Level {
  index: number;
  label: string;
}

export interface PlayerEvents {
  onState(live: boolean, message: string): void;
  onLevels(levels: Level[]): void;
  onLatency(seconds: number): void;
}

let current: Hls | null = null;
(window as unknown as { hearthPlayer: () => Hls | null }).hearthPlayer = () => current;

export class LivePlayer {
  private hls: Hls | null = null;
  private retry: number | undefined;
  private timer: number;
  private stopped = false;
  live = false;

  constructor(
    private video: HTMLVideoElement,
    private src: string,
    private ev: PlayerEvents,
  ) {
    this.timer = window.setInterval(() => {
      if (this.hls && this.hls.latency > 0) this.ev.onLatency(this.hls.latency);
    }, 1000);
    this.setLive(false, 'Connecting…');
    this.start();
  }

  private setLive(live: boolean, message = ''): void {
    this.live = live;
    this.ev.onState(live, message);
  }

  private scheduleRetry(): void {
    clearTimeout(this.retry);
    if (!this.stopped) this.retry = window.setTimeout(() => this.start(), 3000);
  }

  // Try again now (the API says the channel went live).
  kick(): void {
    if (!this.live) this.start();
  }

  setLevel(index: number): void {
    if (this.hls) this.hls.currentLevel = index;
  }

  private start(): void {
    clearTimeout(this.retry);
    if (this.stopped) return;
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
      current = null;
    }
    const video = this.video;
    if (Hls.isSupported()) {
      const hls = new Hls({
        lowLatencyMode: true,
        // One part behind the newest one: with blocking playlist reloads each
        // part arrives the moment it is cut, so this is enough buffer on a
        // sound connection; hls.js falls back further if it stalls.
        liveSyncDuration: 0.5,
        liveMaxLatencyDuration: 5,
        maxLiveSyncPlaybackRate: 1.15,
        backBufferLength: 10,
      });
      this.hls = hls;
      current = hls;
      hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
        this.setLive(true);
        this.ev.onLevels(
          data.levels.map((l, index) => ({
            index,
            label: l.height ? `${l.height}p` : `${Math.round((l.bitrate || 0) / 1000)} kbit/s`,
          })),
        );
        void video.play().catch(() => undefined);
      });
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (!data.fatal) return;
        this.setLive(false, 'Offline. Waiting for the stream…');
        this.scheduleRetry();
      });
      hls.on(Hls.Events.BUFFER_EOS, () => {
        this.setLive(false, 'The stream has ended.');
        this.scheduleRetry();
      });
      hls.loadSource(this.src);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = this.src;
      video.addEventListener('loadedmetadata', () => this.setLive(true), { once: true });
      video.addEventListener(
        'error',
        () => {
          this.setLive(false, 'Offline. Waiting for the stream…');
          this.scheduleRetry();
        },
        { once: true },
      );
    } else {
      this.setLive(false, 'This browser cannot play HLS.');
    }
  }

  destroy(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    clearInterval(this.timer);
    if (this.hls) this.hls.destroy();
    if (current === this.hls) current = null;
    this.hls = null;
  }
}
