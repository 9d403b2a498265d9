// Browser test of the web app, the way a new streamer and a viewer use it:
//
//   1. register through /register on a server that requires e-mail
//      verification (site.require_verification, mail to an SMTP sink in
//      this process); read the link from the mail, open it (/verify), then
//      log in through /login, which lands on /settings/channels;
//   2. open a channel there, read the OBS Server and Stream Key the page shows;
//   3. ffmpeg publishes to that server with that key;
//   4. a second browser (its own profile: no cookies shared) opens the home
//      page and sees the channel listed live (viewers and chatters counted),
//      follows the link to /c/<slug>, and the player plays (video.currentTime
//      advances);
//   5. the streamer's profile /u/<name> lists the channel live;
//   6. the server side of the pages: /watch/<slug> is a 302 to /c/<slug>, and
//      /c/<slug> carries the channel's OpenGraph tags;
//   7. on a phone-sized screen (390x844) the pages do not scroll sideways,
//      and every form control on the forms has a label.
//
// A screenshot of each page is kept in test-artifacts/browser/ui-*.png, with
// the browsers' console in ui-console.log. The last line printed is
// "N passed, M failed".
import path from 'node:path';

import {
  alive, assert, captureConsole, instrumentPlayer, launchBrowser, log, publishLive, runTests, startHearth,
  startSmtpSink, tail, testKit,
} from './lib.mjs';

const kit = testKit('ui');
const { left, until, shot, phoneShot, assertLabelled } = kit;

const DESCRIPTION = 'Hello *world*, this is **bold**.\n\n<img src=x onerror=alert(1)> [site](https://example.org/) [bad](javascript:alert(1))';

async function testStreamerAndViewer(ctx) {
  const { dir } = ctx;
  const sink = await startSmtpSink();
  const hearth = await startHearth(dir, { HEARTH_SITE_REQUIRE_VERIFICATION: 'true', ...sink.env() });
  ctx.hearth = hearth;
  log('test', `hearth on ${hearth.url} (e-mail verification on, SMTP sink on port ${sink.port})`);

  // --- the streamer: register, open a channel, read the key ---------------------
  const streamer = await launchBrowser(dir);
  const sp = streamer.pages()[0] || (await streamer.newPage());
  ctx.pages.push(['streamer', sp]);
  ctx.consoles.push(captureConsole(sp, 'streamer'));
  const name = `ui${Date.now().toString(36)}`;
  const email = `${name}@example.org`;
  const password = 'correct horse battery';
  await sp.goto(`${hearth.url}/register`, { waitUntil: 'load', timeout: left() });
  await sp.getByLabel('User name').fill(name, { timeout: left() });
  await sp.getByLabel('E-mail').fill(email);
  await sp.getByLabel('Password').fill(password);
  await assertLabelled(sp, '/register');
  await shot(sp, 'register');
  // The keyboard's way: Enter in the last field submits the form.
  await sp.getByLabel('Password').press('Enter');
  await sp.locator('#verify-sent').waitFor({ timeout: left() });
  await shot(sp, 'register-sent');

  // The mail, and the link in it.
  const mail = await sink.waitFor(email, left());
  const m = /(https?:\/\/\S+\/verify\?token=[A-Za-z0-9_-]+)/.exec(mail.text);
  assert(m, `no verification link in the mail:\n${mail.text}`);
  const link = m[1];
  assert(link.startsWith(`${hearth.url}/verify?token=`), `the link points elsewhere: ${link}`);
  log('test', `verification mail to ${email}: ${link.replace(/token=.*/, 'token=…')}`);

  // Not before the address is confirmed: the API says so.
  const early = await fetch(`${hearth.url}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Origin: hearth.url },
    body: JSON.stringify({ login: name, password }),
  });
  assert(early.status === 403, `login before verification: HTTP ${early.status}`);

  await sp.goto(link, { waitUntil: 'load', timeout: left() });
  await sp.locator('#verified').waitFor({ timeout: left() });
  await shot(sp, 'verified');
  log('test', 'the /verify page confirmed the address');

  await sp.goto(`${hearth.url}/login?next=${encodeURIComponent('/settings/channels')}`, { waitUntil: 'load', timeout: left() });
  await sp.getByLabel('Name or e-mail').fill(name, { timeout: left() });
  await sp.getByLabel('Password').fill(password);
  await assertLabelled(sp, '/login');
  await sp.getByRole('button', { name: 'Log in' }).click();
  await sp.waitForURL('**/settings/channels', { timeout: left() });
  await sp.locator('#create-channel').waitFor({ timeout: left() });
  log('test', `registered, verified and logged in as "${name}", on ${new URL(sp.url()).pathname}`);
  await sp.getByLabel('Title').fill('UI test: a <b>bold</b> "channel"');
  await shot(sp, 'settings-channels');
  await sp.getByRole('button', { name: 'Create channel' }).click();
  await sp.waitForURL('**/settings/channels/*', { timeout: left() });
  const slug = decodeURIComponent(new URL(sp.url()).pathname.split('/').pop());
  await sp.locator('#stream-key').waitFor({ timeout: left() });
  const key = await sp.locator('#stream-key').inputValue();
  const server = await sp.locator('#obs-server').inputValue();
  assert(/^[A-Za-z0-9_-]{20,}$/.test(key), `the page shows no stream key: "${key}"`);
  assert(server === hearth.rtmpUrl, `the page's OBS server is "${server}", not ${hearth.rtmpUrl}`);
  log('test', `channel "${slug}": server ${server}, key ${key.slice(0, 4)}…`);
  await assertLabelled(sp, '/settings/channels/<slug>');
  await shot(sp, 'settings-channel');
  await phoneShot(sp, 'settings-channel');

  // A description in Markdown, with markup that must stay text.
  await sp.getByLabel(/^Description/).fill(DESCRIPTION);
  await sp.getByRole('button', { name: 'Save', exact: true }).click();
  await sp.getByText('Saved.').waitFor({ timeout: left() });

  // --- publish with what the page showed ----------------------------------------
  const ff = publishLive(`${server}/${key}`, path.join(dir, 'ffmpeg.log'));
  ctx.ffmpeg = ff;

  // --- the viewer: home page lists it live, the channel page plays -----------------
  const viewer = await launchBrowser(dir);
  const vp = viewer.pages()[0] || (await viewer.newPage());
  ctx.pages.push(['viewer', vp]);
  ctx.consoles.push(captureConsole(vp, 'viewer'));
  await instrumentPlayer(vp);
  await vp.goto(`${hearth.url}/`, { waitUntil: 'load', timeout: left() });
  const card = vp.locator(`.live-card[data-slug="${slug}"]`);
  await until('the home page to list the channel live', async () => {
    if (!alive(ff)) throw new Error(`ffmpeg exited (${ff.exitCode ?? ff.signalCode}):\n${tail(path.join(dir, 'ffmpeg.log'))}`);
    const n = await card.count();
    return { ok: n > 0, why: `${n} cards for ${slug}` };
  });
  const cardText = (await card.innerText()).replace(/\s+/g, ' ');
  log('test', `home page lists it: "${cardText}"`);
  assert(cardText.includes(name), `the live card does not name the owner: ${cardText}`);
  assert(cardText.includes('UI test: a <b>bold</b> "channel"'), `the title is not shown as text: ${cardText}`);
  assert(/\d+ viewers? · \d+ chatters?/.test(cardText), `the live card does not count viewers and chatters: ${cardText}`);
  await shot(vp, 'home');
  await phoneShot(vp, 'home');

  await card.locator('a.card-title').click();
  await vp.waitForURL(`**/c/${slug}`, { timeout: left() });
  const probe = () => vp.evaluate(() => {
    const v = document.getElementById('video');
    return {
      state: document.getElementById('state')?.textContent?.trim(),
      viewers: document.getElementById('viewers')?.textContent?.trim(),
      chatters: document.getElementById('chatters')?.textContent?.trim(),
      t: v ? v.currentTime : -1,
      hasHls: !!(window.hearthPlayer && window.hearthPlayer()),
    };
  });
  const started = await until('playback on /c/<slug> (currentTime > 0)', async () => {
    const p = await probe();
    return { ok: p.t > 0, why: JSON.stringify(p), p };
  });
  const moved = await until('currentTime to advance by 1.5 s', async () => {
    const p = await probe();
    return { ok: p.t - started.p.t >= 1.5, why: JSON.stringify(p), p };
  });
  log('test', `playing: currentTime ${started.p.t.toFixed(2)} -> ${moved.p.t.toFixed(2)}, state "${moved.p.state}"`);
  assert(moved.p.state === 'live', `#state shows "${moved.p.state}"`);
  assert(/^\d+ viewers?$/.test(moved.p.viewers) && /^\d+ chatters?$/.test(moved.p.chatters), `viewers "${moved.p.viewers}", chatters "${moved.p.chatters}"`);
  assert(await vp.locator('aside#chat').count() === 1, 'no <aside id="chat"> slot on the channel page');
  const desc = await vp.locator('.description').evaluate((el) => ({
    em: el.querySelector('em')?.textContent,
    strong: el.querySelector('strong')?.textContent,
    imgs: el.querySelectorAll('img, script').length,
    links: [...el.querySelectorAll('a')].map((a) => `${a.getAttribute('href')} ${a.rel}`),
    text: el.textContent,
  }));
  log('test', `description: ${JSON.stringify(desc)}`);
  assert(desc.em === 'world' && desc.strong === 'bold', `Markdown emphasis not rendered: ${JSON.stringify(desc)}`);
  assert(desc.imgs === 0 && desc.text.includes('<img src=x onerror=alert(1)>'), `raw HTML in the description became markup: ${JSON.stringify(desc)}`);
  assert(desc.links.length === 1 && desc.links[0].startsWith('https://example.org/ ') && desc.links[0].includes('noopener'),
    `description links: ${JSON.stringify(desc.links)}`);
  await shot(vp, 'channel');

  // The same page on a phone-sized screen.
  await phoneShot(vp, 'channel');

  // --- the streamer's profile lists the channel, live ------------------------------
  await vp.goto(`${hearth.url}/u/${encodeURIComponent(name)}`, { waitUntil: 'load', timeout: left() });
  const row = vp.locator('#main .rows li', { hasText: 'UI test: a <b>bold</b> "channel"' });
  await until('the profile to list the channel live', async () => {
    const n = await row.locator('.badge.live').count();
    return { ok: n > 0, why: `${await row.count()} rows, ${n} live badges` };
  });
  const heading = await vp.locator('#profile h1').innerText();
  assert(heading === name, `the profile's heading is "${heading}"`);
  const profileHtml = await vp.locator('#main').innerHTML();
  assert(!profileHtml.includes(email), 'the profile page shows the e-mail address');
  assert(!profileHtml.includes('<b>bold</b>'), 'the channel title became markup on the profile');
  log('test', `/u/${name} lists the channel live`);
  await shot(vp, 'profile');
  await phoneShot(vp, 'profile');

  // --- the server's side of the pages ----------------------------------------------
  const r = await fetch(`${hearth.url}/watch/${encodeURIComponent(slug)}`, { redirect: 'manual' });
  assert(r.status === 302 && r.headers.get('location') === `/c/${slug}`,
    `/watch/${slug}: ${r.status} ${r.headers.get('location')}`);
  const html = await (await fetch(`${hearth.url}/c/${encodeURIComponent(slug)}`)).text();
  assert(html.includes('<meta property="og:title" content="UI test: a &lt;b&gt;bold&lt;/b&gt; &quot;channel&quot;" />'),
    `/c/${slug} has no escaped og:title:\n${html.slice(0, 1200)}`);
  assert(!html.includes('<b>bold</b>'), `/c/${slug} has the title as HTML`);
  log('test', '/watch/<slug> redirects; /c/<slug> has escaped OpenGraph tags');

  // The streamer's following page and the login page, for the record.
  await sp.goto(`${hearth.url}/following`, { waitUntil: 'load', timeout: left() });
  await sp.getByRole('heading', { name: 'Following' }).waitFor({ timeout: left() });
  await shot(sp, 'following');
  await vp.setViewportSize({ width: 1280, height: 800 });
  await vp.goto(`${hearth.url}/login`, { waitUntil: 'load', timeout: left() });
  await vp.getByLabel('Name or e-mail').waitFor({ timeout: left() });
  await shot(vp, 'login');
}

runTests(kit, [['register, open a channel, stream to it, find it live and watch it', testStreamerAndViewer]], {
  playerEvents: true,
  onFailure: (ctx) => console.log(`--- ffmpeg log (tail)\n${tail(path.join(ctx.dir, 'ffmpeg.log'), 10)}`),
});
