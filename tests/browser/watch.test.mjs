// Browser test: hls.js in Debian's chromium plays /watch/<slug> while ffmpeg
// publishes to Hearth over RTMP.
//
//   hearth serve (free ports, temp data dir) <- ffmpeg testsrc2 720p30 + sine,
//   libx264 veryfast zerolatency -g 60, AAC, encoded live (-re)
//   headless chromium -> http://127.0.0.1:PORT/watch/<slug>
//
// Passes when the page shows "live", video.currentTime advances by at least
// 2 s, and hls.js reports a latency (printed). Leaves a screenshot, the
// browser console and the server's log in test-artifacts/browser/.
// The last line printed is "N passed, M failed".
import path from 'node:path';

import {
  alive, captureConsole, instrumentPlayer, launchBrowser, log, publishLive, runTests, sleep, startHearth,
  tail, testKit, waitHttp,
} from './lib.mjs';

// Every wait in the test checks the one deadline.
const kit = testKit('watch');
const { left, until, shot } = kit;

async function testWatchPagePlays(ctx) {
  const { dir } = ctx;
  log('test', `hearth, user and channel in ${dir}`);
  const hearth = await startHearth(dir);
  ctx.hearth = hearth;
  log('test', `hearth on ${hearth.url}, rtmp ${hearth.rtmpUrl}, channel "${hearth.slug}"`);

  const ff = publishLive(`${hearth.rtmpUrl}/${hearth.key}`, path.join(dir, 'ffmpeg.log'));
  ctx.ffmpeg = ff;
  await waitHttp(`${hearth.url}/live/${encodeURIComponent(hearth.slug)}/master.m3u8`, {
    child: hearth.child, what: 'the live playlist', deadlineMs: Math.min(20000, left()),
  });
  log('test', 'master.m3u8 is served; opening the watch page');

  const browser = await launchBrowser(dir);
  const page = browser.pages()[0] || (await browser.newPage());
  ctx.pages.push(['watch', page]);
  ctx.consoles.push(captureConsole(page, 'watch'));
  await instrumentPlayer(page);
  const watchUrl = `${hearth.url}/watch/${encodeURIComponent(hearth.slug)}`;
  await page.goto(watchUrl, { waitUntil: 'load', timeout: Math.min(20000, left()) });

  const probe = () => page.evaluate(() => {
    const v = document.getElementById('video');
    const hls = window.hearthPlayer ? window.hearthPlayer() : null;
    return {
      state: document.getElementById('state')?.textContent?.trim(),
      t: v ? v.currentTime : -1,
      paused: v ? v.paused : null,
      readyState: v ? v.readyState : -1,
      latency: hls ? hls.latency : null,
      hasHls: !!hls,
    };
  });

  // Playback has started once currentTime moves at all; from there it must go
  // 2 s further.
  const started = await until('playback to start (video.currentTime > 0)', async () => {
    const p = await probe();
    if (!alive(ff)) throw new Error(`ffmpeg exited (${ff.exitCode ?? ff.signalCode}):\n${tail(path.join(dir, 'ffmpeg.log'))}`);
    return { ok: p.t > 0, why: JSON.stringify(p), p, wall: Date.now() };
  });
  log('test', `playing: currentTime ${started.p.t.toFixed(2)} s, state "${started.p.state}"`);
  const advanced = await until('video.currentTime to advance by 2 s', async () => {
    const p = await probe();
    return { ok: p.t - started.p.t >= 2, why: JSON.stringify(p), p, wall: Date.now() };
  });
  const media = advanced.p.t - started.p.t;
  const wall = (advanced.wall - started.wall) / 1000;
  log('test', `currentTime advanced ${media.toFixed(2)} s in ${wall.toFixed(2)} s of wall time`);
  // hls.js may play a little faster than real time to catch up (up to 1.15x);
  // much faster than that means it skipped rather than played.
  if (media > wall * 1.5 + 0.5) throw new Error(`currentTime jumped ${media.toFixed(2)} s in ${wall.toFixed(2)} s`);

  // The latency hls.js measures, a few times.
  const lat = [];
  for (let i = 0; i < 5; i++) {
    const p = await probe();
    lat.push(p.latency);
    log('test', `hls.js latency ${typeof p.latency === 'number' ? p.latency.toFixed(3) : p.latency} s (currentTime ${p.t.toFixed(2)}, state "${p.state}")`);
    if (i < 4) await sleep(1000);
  }
  const good = lat.filter((x) => typeof x === 'number' && Number.isFinite(x) && x > 0);
  if (!good.length) throw new Error(`hls.js reported no latency: ${JSON.stringify(lat)}`);
  const mean = good.reduce((a, b) => a + b, 0) / good.length;
  console.log(`hls.js latency: ${good.map((x) => x.toFixed(2)).join(' ')} s (mean ${mean.toFixed(2)} s)`);

  const end = await probe();
  if (end.state !== 'live') throw new Error(`#state shows "${end.state}", not "live"`);
  const pageLatency = await page.evaluate(() => document.getElementById('latency')?.textContent);
  log('test', `#state "${end.state}", #latency "${pageLatency}"`);

  await shot(page); // watch.png
}

// Its artifacts keep their first names: watch.png, watch-failed.png,
// console.log and hearth.log.
runTests(kit, [['the watch page plays a live stream with hls.js', testWatchPagePlays]], {
  consoleTail: 40,
  playerEvents: true,
  logPrefix: '',
  failedShot: () => 'watch-failed.png',
  onFailure: (ctx) => console.log(`--- ffmpeg log (tail)\n${tail(path.join(ctx.dir, 'ffmpeg.log'), 10)}`),
});
