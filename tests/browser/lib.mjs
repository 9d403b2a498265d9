// Shared pieces of the browser test and bench/latency: free ports on
// 127.0.0.1, child processes that always get stopped (each in its own process
// group, SIGTERM then SIGKILL), a Hearth server with a user and a channel,
// ffmpeg publishers, Debian's chromium driven by playwright-core, and what
// every *.test.mjs shares: testKit() (assert, until, shot, phoneShot,
// assertLabelled on one deadline) and runTests() (watchdog, PASS/FAIL lines,
// failure screenshots, logs, "N passed, M failed").
//
// Nothing here builds anything or downloads a browser: the binary comes from
// $HEARTH_BIN (default build/hearth), the front end from
// $HEARTH_HTTP_STATIC_DIR (default web/dist), the browser is /usr/bin/chromium.
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

import { chromium } from 'playwright-core';

export const HOST = '127.0.0.1';
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// The flags every run uses: headless, no sandbox (root in a container), no
// GPU, nothing that reaches out to the network, and muted autoplay allowed.
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server',
  '--autoplay-policy=no-user-gesture-required',
];

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function log(prefix, ...args) {
  const t = new Date().toISOString().slice(11, 23);
  console.log(`[${t}] ${prefix}:`, ...args);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function which(name, extra = []) {
  for (const dir of [...(process.env.PATH || '/usr/bin:/bin').split(':'), ...extra]) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

// --- processes and cleanup ---------------------------------------------------

const children = new Set();
const cleanups = [];
const lateCleanups = [];
let cleaning = null;

// Register something to undo at the end. Plain ones (closing the browser) run
// first, newest first; then the child processes are stopped; then the `late`
// ones (removing a temp dir the processes wrote into).
export function onCleanup(fn, { late = false } = {}) {
  (late ? lateCleanups : cleanups).push(fn);
}

async function runCleanups(list) {
  for (const fn of list.splice(0).reverse()) {
    try {
      await Promise.race([fn(), sleep(15000)]);
    } catch (e) {
      console.error('cleanup:', e?.message || e);
    }
  }
}

// A child in its own process group, stdout+stderr to `logFile`.
export function startProcess(name, cmd, args, { env = process.env, cwd, logFile } = {}) {
  const out = logFile ? fs.openSync(logFile, 'a') : 'ignore';
  const child = spawn(cmd, args, { env, cwd, detached: true, stdio: ['ignore', out, out] });
  if (logFile) fs.closeSync(out);
  child.label = name;
  child.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => {
      child.spawnError = err;
      resolve({ code: -1, signal: null, error: err });
    });
  });
  children.add(child);
  return child;
}

export function alive(child) {
  return Boolean(child) && child.exitCode === null && child.signalCode === null && !child.spawnError;
}

// SIGTERM to the child's process group, SIGKILL after `graceMs`.
export async function stopProcess(child, graceMs = 8000) {
  if (!child) return;
  if (alive(child)) {
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
    const timer = sleep(graceMs).then(() => 'timeout');
    if ((await Promise.race([child.exited, timer])) === 'timeout') {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await child.exited;
    }
  }
  children.delete(child);
}

// Stop everything registered so far; concurrent callers share one run.
export function cleanupAll() {
  if (!cleaning) {
    cleaning = (async () => {
      await runCleanups(cleanups);
      for (const child of [...children].reverse()) await stopProcess(child);
      await runCleanups(lateCleanups);
    })().finally(() => {
      cleaning = null;
    });
  }
  return cleaning;
}

// Last resort when the process is going down without the async cleanup
// (an uncaught exception already handled, or a second signal): SIGKILL
// whatever is left, synchronously.
function killAllNow() {
  for (const child of children) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

let signalled = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (signalled) {
      killAllNow();
      process.exit(130);
    }
    signalled = true;
    console.error(`\n${sig}: stopping everything`);
    cleanupAll().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}
process.on('exit', killAllNow);

// --- temp dirs -----------------------------------------------------------------

export function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  // nginx's worker runs as nobody and must read (and write hls/) in here.
  fs.chmodSync(dir, 0o755);
  return dir;
}

// --- HTTP -------------------------------------------------------------------------

export async function waitHttp(url, { child, what, deadlineMs = 10000 } = {}) {
  const deadline = Date.now() + deadlineMs;
  let last = null;
  while (Date.now() < deadline) {
    if (child && !alive(child)) throw new Error(`${what || child.label} exited (${child.exitCode ?? child.signalCode}) before answering ${url}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return await r.text();
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = e?.cause?.code || e?.message || String(e);
    }
    await sleep(100);
  }
  throw new Error(`${what || url} did not answer ${url} within ${deadlineMs / 1000} s (last: ${last})`);
}

// --- Hearth -------------------------------------------------------------------

export function hearthBin() {
  const bin = path.resolve(REPO, process.env.HEARTH_BIN || 'build/hearth');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`no hearth binary at ${bin} (run \`make\` first, or set HEARTH_BIN)`);
  }
  return bin;
}

export function hearthStaticDir() {
  const dir = path.resolve(REPO, process.env.HEARTH_HTTP_STATIC_DIR || 'web/dist');
  if (!fs.existsSync(path.join(dir, 'watch.html'))) {
    throw new Error(`no built front end in ${dir} (watch.html missing; run \`make\` first, or set HEARTH_HTTP_STATIC_DIR)`);
  }
  return dir;
}

// The environment for every hearth command: none of the caller's HEARTH_*
// settings, everything on 127.0.0.1 and inside `dir`.
function hearthEnv(dir, httpPort, rtmpPort, staticDir, xmppPorts = null) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HEARTH_') && k !== 'DB_URL') env[k] = v;
  }
  Object.assign(env, {
    LC_ALL: 'C.UTF-8',
    HEARTH_HTTP_LISTEN: `${HOST}:${httpPort}`,
    HEARTH_RTMP_LISTEN: `${HOST}:${rtmpPort}`,
    HEARTH_STORAGE_DATA_DIR: path.join(dir, 'data'),
    HEARTH_HTTP_STATIC_DIR: staticDir,
    HEARTH_SITE_PUBLIC_URL: `http://${HOST}:${httpPort}`,
    HEARTH_HTTP_SHUTDOWN_TIMEOUT: '3s',
  });
  // The chat's TCP listeners on free ports too: the defaults (5222, 5269)
  // may be taken by another server on this machine, or another test.
  if (xmppPorts) {
    env.HEARTH_XMPP_C2S_LISTEN = `${HOST}:${xmppPorts[0]}`;
    env.HEARTH_XMPP_S2S_LISTEN = `${HOST}:${xmppPorts[1]}`;
  }
  return env;
}

function hearthCli(bin, env, cwd, args, input) {
  const r = spawnSync(bin, args, { env, cwd, input, encoding: 'utf8', timeout: 20000 });
  if (r.status !== 0) {
    throw new Error(`hearth ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
  }
  return r.stdout;
}

// Start `hearth serve` on free ports with its data in `dir`, after creating a
// streamer and a channel with the CLI. `extraEnv`: more HEARTH_* settings for
// the server. `users`: more accounts to make with the CLI first, each
// { name, password, role (e.g. 'admin'), email }. Returns
// { url, rtmpUrl, key, slug, child, logFile }.
export async function startHearth(dir, extraEnv = {}, { users = [] } = {}) {
  const bin = hearthBin();
  const staticDir = hearthStaticDir();
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const httpPort = await freePort();
    const rtmpPort = await freePort();
    const env = hearthEnv(dir, httpPort, rtmpPort, staticDir, [await freePort(), await freePort()]);
    let channel = null;
    if (!fs.existsSync(path.join(dir, 'channel.json'))) {
      hearthCli(bin, env, dir, ['user', 'add', 'alice', '--role', 'streamer', '--password-stdin'], 'pw12345678\n');
      for (const u of users) {
        const args = ['user', 'add', u.name, '--password-stdin'];
        if (u.role) args.push('--role', u.role);
        if (u.email) args.push('--email', u.email);
        hearthCli(bin, env, dir, args, `${u.password}\n`);
      }
      const out = hearthCli(bin, env, dir, ['channel', 'add', '--owner', 'alice', '--title', 'Browser test', '--json']);
      fs.writeFileSync(path.join(dir, 'channel.json'), out);
    }
    channel = JSON.parse(fs.readFileSync(path.join(dir, 'channel.json'), 'utf8'));
    const logFile = path.join(dir, 'hearth.log');
    const child = startProcess('hearth', bin, ['serve'], { env: { ...env, ...extraEnv }, cwd: dir, logFile });
    const url = `http://${HOST}:${httpPort}`;
    try {
      await waitHttp(`${url}/healthz`, { child, what: 'hearth' });
      return {
        url,
        rtmpUrl: `rtmp://${HOST}:${rtmpPort}/live`,
        key: channel.stream_key,
        slug: channel.slug,
        child,
        logFile,
      };
    } catch (e) {
      lastErr = e;
      await stopProcess(child);
      const text = fs.readFileSync(logFile, 'utf8');
      if (!/in use/i.test(text)) break; // a port race is worth another try; nothing else is
    }
  }
  throw new Error(`${lastErr.message}\n${tail(path.join(dir, 'hearth.log'))}`);
}

export function tail(file, n = 30) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n - 1).join('\n');
  } catch {
    return `(no ${file})`;
  }
}

// --- ffmpeg ---------------------------------------------------------------------

const FFMPEG_QUIET = ['-hide_banner', '-nostdin', '-loglevel', 'warning'];

// The test source: testsrc2 1280x720 30 fps with a 440 Hz tone, H.264
// (veryfast, zerolatency: no B-frames) with a keyframe every `gop` frames, AAC.
function sourceArgs({ seconds, live, size = '1280x720' }) {
  const dur = seconds ? [':duration=' + seconds, ':duration=' + seconds] : ['', ''];
  return [
    ...(live ? ['-re'] : []),
    '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=30${dur[0]}`,
    '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000${dur[1]}`,
  ];
}

function encodeArgs(gop) {
  return [
    '-map', '0:v', '-map', '1:a',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p',
    '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0', '-b:v', '3M', '-maxrate', '3M', '-bufsize', '3M',
    '-c:a', 'aac', '-b:a', '128k', '-ar', '48000', '-ac', '2',
  ];
}

// Publish the test source, encoded live, to one RTMP URL. `size`: a smaller
// picture where the test needs a live channel but not the picture (less CPU).
export function publishLive(rtmpUrl, logFile, { gop = 60, size } = {}) {
  const ffmpeg = which('ffmpeg');
  if (!ffmpeg) throw new Error('ffmpeg is not installed (scripts/deps test)');
  return startProcess('ffmpeg', ffmpeg, [
    ...FFMPEG_QUIET, ...sourceArgs({ live: true, size }), ...encodeArgs(gop), '-f', 'flv', rtmpUrl,
  ], { logFile });
}

// Encode `seconds` of the test source once into an FLV file (the codec tags
// RTMP wants; no -re: as fast as it goes).
export async function makeClip(file, logFile, { seconds = 20, gop = 60 } = {}) {
  const ffmpeg = which('ffmpeg');
  if (!ffmpeg) throw new Error('ffmpeg is not installed');
  const child = startProcess('ffmpeg (clip)', ffmpeg, [
    ...FFMPEG_QUIET, '-y', ...sourceArgs({ seconds }), ...encodeArgs(gop), '-t', String(seconds), '-f', 'flv', file,
  ], { logFile });
  const { code, signal } = await child.exited;
  children.delete(child);
  if (code !== 0) throw new Error(`ffmpeg could not make the clip (${code ?? signal}):\n${tail(logFile)}`);
}

// One ffmpeg reading `clip` in real time, looped, copied (no re-encode) to
// every URL through the tee muxer: the same packets reach each server at the
// same moment.
export function publishClipTee(clip, rtmpUrls, logFile) {
  const ffmpeg = which('ffmpeg');
  if (!ffmpeg) throw new Error('ffmpeg is not installed');
  const outs = rtmpUrls.map((u) => `[f=flv:onfail=ignore]${u}`).join('|');
  return startProcess('ffmpeg (tee)', ffmpeg, [
    ...FFMPEG_QUIET, '-re', '-stream_loop', '-1', '-i', clip,
    '-map', '0:v', '-map', '0:a', '-c', 'copy',
    '-f', 'tee', outs,
  ], { logFile });
}

// --- chromium -------------------------------------------------------------------

// A headless chromium with a fresh user-data-dir under `dir`; closed (and the
// profile removed with `dir`) at cleanup.
export async function launchBrowser(dir) {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
  } catch {
    throw new Error(`no chromium at ${CHROMIUM} (apt-get install chromium fonts-dejavu-core)`);
  }
  const profile = fs.mkdtempSync(path.join(dir, 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
    timeout: 30000,
    // playwright's own signal handlers would kill the browser before ours run
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  onCleanup(() => context.close());
  return context;
}

// Record everything a page says: console messages, page errors, failed
// requests. Returns the array it fills; each entry is a line of text.
export function captureConsole(page, name) {
  const lines = [];
  const add = (s) => lines.push(`${new Date().toISOString().slice(11, 23)} [${name}] ${s}`);
  page.on('console', (m) => add(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => add(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => {
    const f = r.failure()?.errorText || '';
    // hls.js aborts requests it no longer needs (blocking reloads it gave up on)
    add(`requestfailed: ${r.method()} ${r.url()} ${f}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) add(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  page.on('crash', () => add('the page crashed'));
  return lines;
}

// Hook hls.js errors and the video's stalls into window.__hearthEvents, for
// whichever hls.js instance window.hearthPlayer() returns (the watch page
// re-creates it on retry; the nginx page in bench/latency exposes the same).
// Installed before the page's own scripts run: call it before page.goto().
export async function instrumentPlayer(page) {
  await page.addInitScript(() => {
    const w = window;
    w.__hearthEvents = w.__hearthEvents || [];
    const push = (s) => w.__hearthEvents.push(`${(performance.now() / 1000).toFixed(2)}s ${s}`);
    const hook = () => {
      const hls = typeof w.hearthPlayer === 'function' ? w.hearthPlayer() : null;
      if (hls && !hls.__hearthHooked) {
        hls.__hearthHooked = true;
        hls.on('hlsError', (_e, d) => push(`hls.js error: type=${d.type} details=${d.details} fatal=${d.fatal}${d.url ? ' url=' + d.url : ''}${d.response ? ' status=' + d.response.code : ''}${d.reason ? ' reason=' + d.reason : ''}${d.error ? ' error=' + d.error.message : ''}`));
        hls.on('hlsBufferEos', () => push('hls.js: BUFFER_EOS'));
      }
      const v = document.querySelector('video');
      if (v && !v.__hearthHooked) {
        v.__hearthHooked = true;
        for (const ev of ['waiting', 'stalled', 'error', 'ended', 'emptied']) {
          v.addEventListener(ev, () => push(`video ${ev} at currentTime ${v.currentTime.toFixed(2)}${ev === 'error' && v.error ? ' code=' + v.error.code + ' ' + v.error.message : ''}`));
        }
      }
    };
    hook();
    setInterval(hook, 250);
  });
}

export async function playerEvents(page) {
  try {
    return await page.evaluate(() => window.__hearthEvents || []);
  } catch {
    return [];
  }
}

// Numbers: percentiles by nearest rank over a sorted copy.
export function percentile(values, p) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

// --- mail: a small SMTP sink ------------------------------------------------------

// Plain SMTP on 127.0.0.1 that accepts every message (what libcurl sends:
// EHLO, MAIL FROM, RCPT TO, DATA, QUIT) and keeps { rcpts, text }. Hearth
// talks to it with smtp.tls = none. waitFor(rcpt) resolves with the first
// message to that address. Closed at cleanup.
const SMTP_MESSAGE_MAX = 1 << 20;

export async function startSmtpSink() {
  const messages = [];
  const waiters = new Set();
  const sockets = new Set();
  const notify = () => {
    for (const w of [...waiters]) {
      const m = messages.find((x) => x.rcpts.includes(w.rcpt));
      if (m) {
        waiters.delete(w);
        w.resolve(m);
      }
    }
  };
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.setEncoding('utf8');
    let buf = '';
    let inData = false;
    let rcpts = [];
    let data = [];
    let size = 0;
    const say = (line) => sock.write(`${line}\r\n`);
    say('220 hearth-test sink');
    sock.on('data', (chunk) => {
      buf += chunk;
      size += chunk.length;
      if (size > SMTP_MESSAGE_MAX * 2) {
        sock.destroy();
        return;
      }
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        if (inData) {
          if (line === '.') {
            inData = false;
            messages.push({ rcpts, text: data.join('\n') });
            data = [];
            size = 0;
            say('250 queued');
            notify();
          } else {
            data.push(line.startsWith('.') ? line.slice(1) : line); // dot-stuffing
          }
          continue;
        }
        const up = line.toUpperCase();
        if (up.startsWith('EHLO')) {
          say('250-sink');
          say('250 8BITMIME');
        } else if (up.startsWith('MAIL FROM')) {
          rcpts = [];
          say('250 ok');
        } else if (up.startsWith('RCPT TO')) {
          rcpts.push(line.slice(line.indexOf(':') + 1).trim().replace(/^<|>$/g, ''));
          say('250 ok');
        } else if (up === 'DATA') {
          inData = true;
          say('354 go on');
        } else if (up === 'QUIT') {
          say('221 bye');
          sock.end();
        } else {
          say('250 ok');
        }
      }
    });
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, HOST, resolve);
  });
  onCleanup(
    () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    port: server.address().port,
    messages,
    // The HEARTH_* settings that send Hearth's mail here.
    env() {
      return {
        HEARTH_SMTP_HOST: HOST,
        HEARTH_SMTP_PORT: String(server.address().port),
        HEARTH_SMTP_TLS: 'none',
        HEARTH_SMTP_FROM: 'Hearth Test <noreply@hearth.test>',
      };
    },
    waitFor(rcpt, deadlineMs) {
      return new Promise((resolve, reject) => {
        const w = { rcpt, resolve };
        waiters.add(w);
        notify();
        setTimeout(() => {
          if (waiters.delete(w)) reject(new Error(`no mail to ${rcpt} within ${deadlineMs / 1000} s (${messages.length} other messages)`));
        }, deadlineMs).unref();
      });
    },
  };
}

// --- two-factor codes -------------------------------------------------------------

// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) from a Base32 secret (spaces allowed).
export function totpCode(secretB32, unixSeconds = Date.now() / 1000, step = 30) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const bytes = [];
  for (const ch of secretB32.replace(/[\s=]/g, '').toUpperCase()) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error(`not Base32: ${ch}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / step)));
  const mac = crypto.createHmac('sha1', Buffer.from(bytes)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const n = (mac.readUInt32BE(off) & 0x7fffffff) % 1000000;
  return String(n).padStart(6, '0');
}

// --- images -----------------------------------------------------------------------

function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

// A real PNG of w x h pixels in one colour (RGB), for upload tests.
export function solidPng(w, h, [r, g, b] = [255, 122, 47]) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const row = Buffer.alloc(1 + w * 3);
  for (let x = 0; x < w; x++) row.set([r, g, b], 1 + x * 3);
  const raw = Buffer.concat(Array.from({ length: h }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// --- page checks ------------------------------------------------------------------

// Every form control on the page that a person can reach has a name a screen
// reader says (a <label>, aria-label or aria-labelledby). Returns the ones
// that do not, as short descriptions.
export function unlabelledControls(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea, button')]
      .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
      .filter((el) => {
        if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
        if (el.tagName === 'BUTTON') return !el.textContent.trim();
        return !(el.labels && [...el.labels].some((l) => l.textContent.trim()));
      })
      .map((el) => `${el.tagName.toLowerCase()}#${el.id || '?'}[${el.type || ''}]`),
  );
}

// How far the page is wider than the window (0: no sideways scrolling).
export function horizontalOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

// --- the test files' helpers and runner ---------------------------------------------

export const ARTIFACTS = path.join(REPO, 'test-artifacts', 'browser');
// Seconds a test has (the run script's BROWSER_TEST_TIMEOUT), unless it says otherwise.
export const TIMEOUT_S = Number(process.env.BROWSER_TEST_TIMEOUT || 90);
const KEEP_TMP = process.env.BROWSER_TEST_KEEP === '1';

// A wait that ran out: reported by its message alone, without a stack.
export class Timeout extends Error {}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// What a test file's tests share: a deadline (runTests sets it afresh for each
// test), and helpers that keep to it. Screenshots are named
// test-artifacts/browser/<prefix>-<name>.png; `fullPage`: of the whole page
// (the failure screenshots too); `everyMs`: until()'s default polling pace.
export function testKit(prefix, { fullPage = false, everyMs = 250 } = {}) {
  let seconds = TIMEOUT_S;
  let deadline = Date.now() + seconds * 1000;
  // Milliseconds to the deadline, at least 1000 (a timeout for playwright).
  const left = () => Math.max(1000, deadline - Date.now());

  // Call `fn` until it returns { ok: true, … }, and return that; at the
  // deadline a Timeout naming `what` and fn's last `why`.
  async function until(what, fn, { everyMs: pace = everyMs } = {}) {
    let last;
    while (Date.now() < deadline) {
      last = await fn();
      if (last?.ok) return last;
      await sleep(pace);
    }
    throw new Timeout(`timed out after ${seconds} s waiting for ${what}${last?.why ? ` (last: ${last.why})` : ''}`);
  }

  // A screenshot to <prefix>-<name>.png (<prefix>.png without a name).
  async function shot(page, name) {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const file = path.join(ARTIFACTS, name ? `${prefix}-${name}.png` : `${prefix}.png`);
    await page.screenshot({ path: file, timeout: Math.min(15000, left()), fullPage });
    log('test', `screenshot: ${path.relative(REPO, file)}`);
  }

  // A phone-sized (390x844) screenshot to <prefix>-<name>-phone.png; the page
  // must not scroll sideways there.
  async function phoneShot(page, name) {
    const old = page.viewportSize();
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(300);
    const over = await horizontalOverflow(page);
    await shot(page, `${name}-phone`);
    assert(over <= 0, `${name} on a 390 px wide screen is ${over} px too wide`);
    if (old) await page.setViewportSize(old);
  }

  async function assertLabelled(page, what) {
    const bad = await unlabelledControls(page);
    assert(bad.length === 0, `${what}: form controls without a label: ${bad.join(', ')}`);
  }

  function startClock(s) {
    seconds = s;
    deadline = Date.now() + s * 1000;
  }

  return { prefix, fullPage, left, until, shot, phoneShot, assertLabelled, startClock };
}

// Run a test file's `tests`, each [name, fn, seconds = TIMEOUT_S], one after
// another, then exit. fn(ctx) gets ctx = { dir, pages, consoles }: a fresh
// temp dir (removed afterwards unless BROWSER_TEST_KEEP=1), and it adds
// [who, page] to ctx.pages, captureConsole()'s lines to ctx.consoles, and
// startHearth()'s result as ctx.hearth. After each test everything is
// stopped (cleanupAll).
//
// Prints "PASS <name> (N s)" or "FAIL <name> (N s): <why>" per test and
// "N passed, M failed" last. On a failure: a screenshot of each page
// (<prefix>-failed-<who>.png), the tail of hearth's log, and onFailure(ctx).
// Pass or fail: the browsers' console (and, with playerEvents, each page's
// player events) printed and kept in <prefix>-console.log, hearth's log in
// <prefix>-hearth.log (-1.log, -2.log… with several tests). Whatever an
// earlier run left of these and of <prefix>-*.png is removed first. A
// watchdog stops everything `slackS` seconds past the tests' own time.
//
// Options: what (the file, in the watchdog's message), slackS, hearthTail
// (lines of hearth's log), consoleTail (lines of console shown) and
// consoleFilter (which are shown), playerEvents, logPrefix (the console and
// hearth logs' names start with it instead of "<prefix>-"), failedShot(who)
// (a failure screenshot's file name), onFailure(ctx).
export function runTests(kit, tests, {
  what = 'the browser test',
  slackS = 30,
  hearthTail = 30,
  consoleTail = 30,
  consoleFilter = () => true,
  playerEvents: withPlayerEvents = false,
  logPrefix = `${kit.prefix}-`,
  failedShot = (who) => `${kit.prefix}-failed-${who}.png`,
  onFailure = null,
} = {}) {
  const consoleFile = path.join(ARTIFACTS, `${logPrefix}console.log`);
  const hearthFile = (i) => `${logPrefix}hearth${tests.length > 1 ? `-${i + 1}` : ''}.log`;

  async function main() {
    const total = tests.reduce((n, t) => n + (t[2] ?? TIMEOUT_S), 0) + slackS;
    let passed = 0;
    let failed = 0;
    const watchdog = setTimeout(() => {
      console.error(`FAIL: ${what} ran past ${total} s; stopping everything`);
      cleanupAll().finally(() => {
        console.log(`${passed} passed, ${tests.length - passed} failed`);
        process.exit(1);
      });
    }, total * 1000);
    watchdog.unref();

    // Nothing stale from an earlier run: what is there afterwards is this run's.
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const stale = new Set([`${kit.prefix}.png`, path.basename(consoleFile), ...tests.map((_, i) => hearthFile(i))]);
    for (const f of fs.readdirSync(ARTIFACTS)) {
      if (f.startsWith(`${kit.prefix}-`) || stale.has(f)) fs.rmSync(path.join(ARTIFACTS, f), { force: true });
    }

    const lines = [];
    for (const [i, [name, fn, seconds = TIMEOUT_S]] of tests.entries()) {
      kit.startClock(seconds);
      const dir = tempDir(`hearth-${kit.prefix}-`);
      const ctx = { dir, pages: [], consoles: [] };
      if (!KEEP_TMP) onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }), { late: true });
      const t0 = Date.now();
      try {
        await fn(ctx);
        passed++;
        console.log(`PASS ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        failed++;
        console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${e instanceof Timeout ? e.message : e?.stack || e}`);
        for (const [who, page] of ctx.pages) {
          const file = path.join(ARTIFACTS, failedShot(who));
          try {
            await page.screenshot({ path: file, timeout: 5000, fullPage: kit.fullPage });
            console.log(`screenshot of the failure: ${path.relative(REPO, file)} (${page.url()})`);
          } catch {
            // the page may be gone
          }
        }
        if (ctx.hearth) console.log(`--- hearth log (tail)\n${tail(ctx.hearth.logFile, hearthTail)}`);
        if (onFailure) await onFailure(ctx);
      }
      // The browsers' side of the story, pass or fail.
      const mine = ctx.consoles.flat();
      if (withPlayerEvents) {
        for (const [who, page] of ctx.pages) {
          for (const e of await playerEvents(page)) mine.push(`[${who}] player: ${e}`);
        }
      }
      if (tests.length > 1) lines.push(`=== ${name}`);
      lines.push(...mine);
      fs.writeFileSync(consoleFile, lines.join('\n') + '\n');
      if (ctx.hearth) fs.copyFileSync(ctx.hearth.logFile, path.join(ARTIFACTS, hearthFile(i)));
      if (mine.length) {
        console.log(`--- browser console${withPlayerEvents ? ' and player events' : ''} (${mine.length}; also in ${path.relative(REPO, consoleFile)})`);
        for (const l of mine.filter(consoleFilter).slice(-consoleTail)) console.log(l);
      } else if (withPlayerEvents) {
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
}
