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
import fs from 'node:fs';
import path from 'node:path';

import {
  REPO, alive, captureConsole, cleanupAll, instrumentPlayer, launchBrowser, log, onCleanup,
  playerEvents, publishLive, sleep, startHearth, tail, tempDir, waitHttp,
} from './lib.mjs';

const TIMEOUT_S = Number(process.env.BROWSER_TEST_TIMEOUT || 90);
const ARTIFACTS = path.join(REPO, 'test-artifacts', 'browser');
const KEEP_TMP = process.env.BROWSER_TEST_KEEP === '1';

class Timeout extends Error {}

// Every wait in the test checks this one deadline.
const deadline = Date.now() + TIMEOUT_S * 1000;
function left() {
  return deadline - Date.now();
}
async function until(what, fn, { everyMs = 250 } = {}) {
  let last;
  while (left() > 0) {
    last = await fn();
    if (last?.ok) return last;
    await sleep(everyMs);
  }
  throw new Timeout(`timed out after ${TIMEOUT_S} s waiting for ${what}${last?.why ? ` (last: ${last.why})` : ''}`);
}

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
  ctx.console = captureConsole(page, 'watch');
  ctx.page = page;
  await instrumentPlayer(page);
  const watchUrl = `${hearth.url}/watch/${encodeURIComponent(hearth.slug)}`;
  await page.goto(watchUrl, { waitUntil: 'load', timeout: Math.max(1000, Math.min(20000, left())) });

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

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'watch.png'), timeout: Math.max(1000, Math.min(15000, left())) });
  log('test', `screenshot: ${path.relative(REPO, path.join(ARTIFACTS, 'watch.png'))}`);
}

async function main() {
  const tests = [['the watch page plays a live stream with hls.js', testWatchPagePlays]];
  let passed = 0;
  let failed = 0;
  const watchdog = setTimeout(() => {
    console.error(`FAIL: the browser test ran past ${TIMEOUT_S + 30} s; stopping everything`);
    cleanupAll().finally(() => {
      console.log(`${passed} passed, ${tests.length - passed} failed`);
      process.exit(1);
    });
  }, (TIMEOUT_S + 30) * 1000);
  watchdog.unref();

  // Nothing stale from an earlier run: what is there afterwards is this run's.
  for (const f of ['watch.png', 'watch-failed.png', 'console.log', 'hearth.log']) fs.rmSync(path.join(ARTIFACTS, f), { force: true });

  for (const [name, fn] of tests) {
    const dir = tempDir('hearth-browser-');
    const ctx = { dir };
    if (!KEEP_TMP) onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }), { late: true });
    const t0 = Date.now();
    try {
      await fn(ctx);
      passed++;
      console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${e instanceof Timeout ? e.message : e?.stack || e}`);
      if (ctx.page) {
        try {
          fs.mkdirSync(ARTIFACTS, { recursive: true });
          await ctx.page.screenshot({ path: path.join(ARTIFACTS, 'watch-failed.png'), timeout: 5000 });
          console.log(`screenshot of the failure: ${path.relative(REPO, path.join(ARTIFACTS, 'watch-failed.png'))}`);
        } catch {
          // the page may be gone
        }
      }
      if (ctx.hearth) console.log(`--- hearth log (tail)\n${tail(ctx.hearth.logFile)}`);
      console.log(`--- ffmpeg log (tail)\n${tail(path.join(dir, 'ffmpeg.log'), 10)}`);
    }
    // The browser's side of the story, pass or fail.
    const events = ctx.page ? await playerEvents(ctx.page) : [];
    const lines = [...(ctx.console || []), ...events.map((e) => `player: ${e}`)];
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    fs.writeFileSync(path.join(ARTIFACTS, 'console.log'), lines.join('\n') + '\n');
    if (ctx.hearth) fs.copyFileSync(ctx.hearth.logFile, path.join(ARTIFACTS, 'hearth.log'));
    if (lines.length) {
      console.log(`--- browser console and player events (${lines.length}; also in test-artifacts/browser/console.log)`);
      for (const l of lines.slice(-40)) console.log(l);
    } else {
      console.log('browser console: nothing logged, no hls.js errors, no stalls');
    }
    await cleanupAll();
  }
  clearTimeout(watchdog);
  console.log(`${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  async (e) => {
    console.error(e?.stack || e);
    await cleanupAll();
    console.log('0 passed, 1 failed');
    process.exit(1);
  },
);
