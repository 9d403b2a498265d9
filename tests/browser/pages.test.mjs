// Browser test of the pages the other tests do not open, each with real data:
//
//   1. an admin (made with `hearth user add root --role admin`) logs in and
//      finds the Topics tab in settings; adds two topics (one with markup in
//      its name, which must stay text), renames one from the keyboard and
//      deletes it;
//   2. the streamer alice sees no Topics tab (and the page refuses her), makes
//      an API key in the API-keys tab, sees it listed, and uses it (X-API-Key)
//      to file her channel under the topic and upload its banner; then goes
//      live (a small ffmpeg picture: the page needs a live channel, not a
//      sharp one);
//   3. the admin follows the channel, and on the channel page sees viewers,
//      chatters, the banner behind the header (on a phone the player stays
//      on the screen), and the chat's head counting the room;
//   4. the topic page lists the channel live (viewers and chatters on the
//      card: alice sits in her chat meanwhile) and in its channel list;
//   5. search through the header's box: by title and by owner; people are
//      listed (the owner, linking to her profile);
//   6. the notifications tab: the followed channel with its e-mail switch
//      (turned on, still on after a reload) and the in-app "went live";
//   7. the password reset page: ask for a link for carol (mail to an SMTP
//      sink in this process), open it, choose a new password, log in with it;
//   8. on a server with site.allow_registration = false, /register says that
//      registration is closed, and the header has no sign-up link.
//
// Each page is checked for unlabelled form controls and sideways scrolling at
// 390 px; screenshots go to test-artifacts/browser/pages-*.png, the
// browsers' console to pages-console.log. The last line printed is
// "N passed, M failed".
import path from 'node:path';

import {
  TIMEOUT_S, Timeout, alive, assert, captureConsole, launchBrowser, log, publishLive, runTests, sleep,
  solidPng, startHearth, startSmtpSink, tail, testKit,
} from './lib.mjs';

// Each test has its own deadline (the second is short).
const kit = testKit('pages', { fullPage: true });
const { left, until, shot, phoneShot, assertLabelled } = kit;

const ADMIN = { name: 'root', password: 'admin password 1', role: 'admin' };
const CAROL = { name: 'carol', password: 'carol password 1', email: 'carol@example.org' };
const ALICE_PW = 'pw12345678'; // lib.mjs makes alice with it
const TOPIC = 'Retro <i>games</i> & more';
const SCRATCH = 'Scratch';

// The page's status line or alert, once one matches.
async function said(page, re, what) {
  const box = page.locator('[role=status], [role=alert]').filter({ hasText: re }).first();
  await box.waitFor({ timeout: left() }).catch(async () => {
    throw new Timeout(`${what}: nothing on the page says ${re} (alerts: ${JSON.stringify(await page.locator('[role=alert]').allInnerTexts())}, status: ${JSON.stringify(await page.locator('[role=status]').allInnerTexts())})`);
  });
  return (await box.innerText()).trim();
}

async function newPage(ctx, dir, who) {
  const context = await launchBrowser(dir);
  const page = context.pages()[0] || (await context.newPage());
  ctx.pages.push([who, page]);
  ctx.consoles.push(captureConsole(page, who));
  page.on('dialog', (d) => void d.accept()); // "Delete the topic …?" and the like
  return page;
}

async function login(page, url, name, password, next) {
  await page.goto(`${url}/login?next=${encodeURIComponent(next)}`, { waitUntil: 'load', timeout: left() });
  await page.getByLabel('Name or e-mail').fill(name, { timeout: left() });
  await page.getByLabel('Password').fill(password);
  await page.getByLabel('Password').press('Enter');
  await page.waitForURL(`**${next}`, { timeout: left() });
}

function topicRow(page, name) {
  return page.locator(`#topics li[data-name="${name.replace(/["\\]/g, '\\$&')}"]`);
}

async function testPages(ctx) {
  const { dir } = ctx;
  const sink = await startSmtpSink();
  const hearth = await startHearth(dir, { HEARTH_XMPP_FEDERATION: 'false', ...sink.env() }, { users: [ADMIN, CAROL] });
  ctx.hearth = hearth;
  const { url, slug } = hearth;
  const api = (p, init) => fetch(`${url}/api/v1${p}`, init);
  log('test', `hearth on ${url}; alice's channel "${slug}"; admin ${ADMIN.name}`);

  // --- 1. topics, as the admin --------------------------------------------------------------
  const ap = await newPage(ctx, dir, 'admin');
  await login(ap, url, ADMIN.name, ADMIN.password, '/settings');
  await ap.getByRole('link', { name: 'Topics', exact: true }).click({ timeout: left() });
  await ap.waitForURL('**/settings/topics', { timeout: left() });
  await ap.getByLabel('Topic name').fill(TOPIC, { timeout: left() });
  await ap.getByRole('button', { name: 'Add topic' }).click();
  await said(ap, /added/, 'adding a topic');
  await topicRow(ap, TOPIC).waitFor({ timeout: left() });
  // The keyboard's way: Enter in the name field adds it.
  await ap.getByLabel('Topic name').fill(SCRATCH);
  await ap.getByLabel('Topic name').press('Enter');
  await topicRow(ap, SCRATCH).waitFor({ timeout: left() });
  assert(await ap.locator('#topics i').count() === 0, 'a topic name became markup in the list');
  const topicSlug = await topicRow(ap, TOPIC).getAttribute('data-slug');
  assert(topicSlug, 'no slug on the topic row');
  await assertLabelled(ap, '/settings/topics');
  await shot(ap, 'settings-topics');
  await phoneShot(ap, 'settings-topics');

  // Rename from the keyboard: type the new name in the row's field, Enter.
  const renameField = ap.getByLabel(`Name of the topic “${SCRATCH}”`);
  await renameField.fill(`${SCRATCH} pad`);
  await renameField.press('Enter');
  const renamed = await said(ap, /is now|cannot rename/, 'renaming a topic');
  assert(/is now/.test(renamed), `renaming a topic: the page said "${renamed}"`);
  await topicRow(ap, `${SCRATCH} pad`).waitFor({ timeout: left() });
  let listed = (await (await api('/topics')).json()).topics.map((t) => t.name);
  assert(listed.includes(`${SCRATCH} pad`) && !listed.includes(SCRATCH), `GET /topics after the rename: ${JSON.stringify(listed)}`);
  log('test', `renamed: "${renamed}"`);
  const scratchName = `${SCRATCH} pad`;
  await ap.getByRole('button', { name: `Delete the topic “${scratchName}”` }).click();
  const deleted = await said(ap, /deleted|cannot delete/, 'deleting a topic');
  assert(/deleted/.test(deleted), `deleting a topic: the page said "${deleted}"`);
  await until('the deleted topic to leave the list', async () => ({ ok: (await topicRow(ap, scratchName).count()) === 0 }));
  listed = (await (await api('/topics')).json()).topics.map((t) => t.name);
  assert(!listed.includes(scratchName), `GET /topics after the deletion: ${JSON.stringify(listed)}`);
  await shot(ap, 'settings-topics-edited');
  log('test', `topics: "${TOPIC}" (/topic/${topicSlug}); renamed and deleted "${SCRATCH}"`);

  // --- 2. alice: no Topics tab; an API key; her channel in the topic, with a banner -------------
  const sp = await newPage(ctx, dir, 'alice');
  await login(sp, url, 'alice', ALICE_PW, '/settings/api-keys');
  assert(await sp.getByRole('link', { name: 'Topics', exact: true }).count() === 0, 'a streamer sees the Topics tab');
  await sp.getByLabel('Name', { exact: true }).fill('ci key', { timeout: left() });
  await sp.getByLabel(/^Expires after/).fill('30');
  await sp.getByRole('button', { name: 'Create key' }).click();
  await sp.locator('#api-key-new').waitFor({ timeout: left() });
  const key = await sp.locator('#api-key-new').inputValue();
  assert(/^\S{20,}$/.test(key), `the new key: "${key}"`);
  const keyRow = sp.locator('table tbody tr', { hasText: 'ci key' });
  await keyRow.waitFor({ timeout: left() });
  const rowText = (await keyRow.innerText()).replace(/\s+/g, ' ');
  const prefix = (await keyRow.locator('code').innerText()).replace(/…$/, '');
  assert(prefix.length >= 4 && key.startsWith(prefix), `the listed key ${prefix}… is not the new key ${key.slice(0, 8)}…`);
  assert(!(await sp.locator('table').innerText()).includes(key), 'the whole key is in the list');
  log('test', `API key listed: "${rowText}"`);
  await assertLabelled(sp, '/settings/api-keys');
  await shot(sp, 'settings-api-keys');
  await phoneShot(sp, 'settings-api-keys');

  await sp.goto(`${url}/settings/topics`, { waitUntil: 'load', timeout: left() });
  await sp.locator('#topics-admin-only').waitFor({ timeout: left() });
  assert(await sp.getByLabel('Topic name').count() === 0, 'a streamer gets the topic form');

  // The key at work: the channel goes under the topic, and gets a banner.
  const withKey = { 'X-API-Key': key };
  const r1 = await api(`/channels/${slug}`, {
    method: 'PATCH', headers: { ...withKey, 'Content-Type': 'application/json' }, body: JSON.stringify({ topic: TOPIC }),
  });
  const ch1 = await r1.json();
  assert(r1.status === 200 && ch1.topic_slug === topicSlug, `PATCH with the key: ${r1.status} ${JSON.stringify(ch1)}`);
  const r2 = await api(`/channels/${slug}/banner`, { method: 'PUT', headers: { ...withKey, 'Content-Type': 'image/png' }, body: solidPng(960, 240, [40, 90, 200]) });
  assert(r2.status === 200, `PUT banner with the key: ${r2.status} ${await r2.text()}`);
  const afterKey = await (await sp.evaluate(() => fetch('/api/v1/me/api-keys').then((r) => r.json()))).keys.find((k) => k.name === 'ci key');
  assert(afterKey && afterKey.last_used, `the key's "last used" after use: ${JSON.stringify(afterKey)}`);
  log('test', `with the key: channel under topic ${ch1.topic_slug}, banner uploaded`);
  // alice stays on her channel page (in its chat) while the admin looks around.
  await sp.goto(`${url}/c/${slug}`, { waitUntil: 'load', timeout: left() });

  // --- 3. the admin follows; alice goes live; the channel page -----------------------------
  await ap.goto(`${url}/c/${slug}`, { waitUntil: 'load', timeout: left() });
  await ap.locator('#follow').click({ timeout: left() });
  await until('the follow to take', async () => ({ ok: (await ap.locator('#follow').innerText()) === 'Unfollow' }));
  const ff = publishLive(`${hearth.rtmpUrl}/${hearth.key}`, path.join(dir, 'ffmpeg.log'), { size: '320x180' });
  await until('the channel page to show it live, with viewers and chatters', async () => {
    if (!alive(ff)) throw new Error(`ffmpeg exited (${ff.exitCode ?? ff.signalCode}):\n${tail(path.join(dir, 'ffmpeg.log'))}`);
    const s = await ap.evaluate(() => ({
      state: document.getElementById('state')?.textContent,
      viewers: document.getElementById('viewers')?.textContent || '',
      chatters: document.getElementById('chatters')?.textContent || '',
      here: document.getElementById('chat-occupants')?.textContent || '',
      chat: document.querySelector('.chat-panel')?.getAttribute('data-status'),
    }));
    const n = Number.parseInt(s.chatters, 10);
    return {
      ok: s.state === 'live' && /^\d+ viewers?$/.test(s.viewers) && /^\d+ chatters?$/.test(s.chatters) && n >= 1 && Number(s.here) >= n,
      why: JSON.stringify(s),
    };
  });
  const banner = await ap.locator('#channel-head img.banner').evaluate((el) => ({ w: el.naturalWidth, complete: el.complete, alt: el.alt }));
  assert(banner.complete && banner.w === 960 && banner.alt === '', `the channel page's banner: ${JSON.stringify(banner)}`);
  log('test', `channel page: ${(await ap.locator('#channel-head .meta-text > div').first().innerText()).replace(/\s+/g, ' ')}, "${await ap.locator('.chat-head').innerText()}"`);
  await shot(ap, 'channel-banner');
  // On a phone the banner is below the player, which stays on the screen.
  await ap.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  const geo = await ap.evaluate(() => {
    const v = document.getElementById('video').getBoundingClientRect();
    const h = document.getElementById('channel-head').getBoundingClientRect();
    return { videoBottom: v.bottom, videoHeight: v.height, headTop: h.top, headHeight: h.height, vh: window.innerHeight };
  });
  assert(geo.videoHeight > 150 && geo.videoBottom <= geo.vh && geo.headTop >= geo.videoBottom, `the player on a phone: ${JSON.stringify(geo)}`);
  await ap.setViewportSize({ width: 1280, height: 800 });
  await phoneShot(ap, 'channel-banner');
  // An admin may edit alice's channel, but its stream key stays hers.
  await ap.getByRole('link', { name: 'Edit channel' }).click();
  await ap.locator('#stream-key-owner-only').waitFor({ timeout: left() });
  assert(await ap.locator('#stream-key').count() === 0, 'an admin is shown the stream key');
  assert((await ap.locator('#obs-server').inputValue()).startsWith('rtmp://'), 'no RTMP server for the admin');
  await shot(ap, 'settings-channel-as-admin');

  // --- 4. the topic page ---------------------------------------------------------------------
  await ap.goto(`${url}/`, { waitUntil: 'load', timeout: left() });
  await ap.locator('.chips a', { hasText: TOPIC }).click({ timeout: left() });
  await ap.waitForURL(`**/topic/${topicSlug}`, { timeout: left() });
  const card = ap.locator(`.live-card[data-slug="${slug}"]`);
  await card.waitFor({ timeout: left() });
  await until('the topic page card to show viewers and chatters', async () => {
    const t = (await card.locator('.viewers').innerText()).replace(/\s+/g, ' ');
    return { ok: /^\d+ viewers? · [1-9]\d* chatters?$/.test(t), why: t };
  });
  const heading = await ap.locator('h1').first().innerText();
  assert(heading === TOPIC, `the topic page's heading: "${heading}"`);
  assert(await ap.locator('#main i').count() === 0, 'the topic name became markup on its page');
  await ap.locator('.rows li', { hasText: 'Browser test' }).waitFor({ timeout: left() });
  log('test', `/topic/${topicSlug}: "${(await card.innerText()).replace(/\s+/g, ' ')}"`);
  await assertLabelled(ap, '/topic/<slug>');
  await shot(ap, 'topic');
  await phoneShot(ap, 'topic');

  // The profile shows the banner too.
  await ap.goto(`${url}/u/alice`, { waitUntil: 'load', timeout: left() });
  await ap.locator('#profile-head img.banner').waitFor({ timeout: left() });
  await shot(ap, 'profile-banner');
  await phoneShot(ap, 'profile-banner');

  // --- 5. search ----------------------------------------------------------------------------
  const box = ap.getByLabel('Search channels and people');
  await box.fill('browser t');
  await box.press('Enter');
  await ap.waitForURL('**/search?q=*', { timeout: left() });
  await ap.locator('#search-channels .rows li', { hasText: 'Browser test' }).waitFor({ timeout: left() });
  await box.fill('alice');
  await box.press('Enter');
  await until('search by owner', async () => ({ ok: new URL(ap.url()).searchParams.get('q') === 'alice' }));
  await ap.locator('#search-channels .rows li', { hasText: 'Browser test' }).waitFor({ timeout: left() });
  const sr = await (await api('/channels?q=alice&limit=50')).json();
  assert(Array.isArray(sr.users) && sr.users.some((u) => u.name === 'alice'), `search API: ${JSON.stringify(sr.users)}`);
  const person = ap.locator('#search-people a', { hasText: 'alice' });
  await person.waitFor({ timeout: left() });
  assert((await person.getAttribute('href')) === '/u/alice', 'the person links elsewhere');
  log('test', 'search lists alice among people');
  const none = await ap.locator('#search-channels').innerText();
  assert(!/Nothing matches/.test(none), `search: ${none}`);
  await assertLabelled(ap, '/search');
  await shot(ap, 'search');
  await phoneShot(ap, 'search');

  // --- 6. notifications ----------------------------------------------------------------------
  await ap.locator('#nav-user').click();
  await ap.getByRole('link', { name: 'Notifications', exact: true }).click({ timeout: left() });
  await ap.waitForURL('**/settings/notifications', { timeout: left() });
  const mailSwitch = ap.getByLabel('Browser test', { exact: true });
  await mailSwitch.waitFor({ timeout: left() });
  assert(!(await mailSwitch.isChecked()), 'e-mail is on before it was asked for');
  await until('the in-app "went live" notification', async () => {
    const n = await ap.locator('#main .rows li', { hasText: 'went live' }).count();
    if (!n) await ap.reload({ waitUntil: 'load', timeout: left() });
    return { ok: n > 0, why: `${n} notifications` };
  }, { everyMs: 1500 });
  await mailSwitch.check();
  await until('the e-mail switch to stick', async () => {
    const r = await ap.evaluate((s) => fetch(`/api/v1/channels/${s}`).then((x) => x.json()), slug);
    return { ok: r.following === true && r.notify_email === true, why: JSON.stringify({ following: r.following, notify_email: r.notify_email }) };
  });
  await ap.reload({ waitUntil: 'load', timeout: left() });
  await ap.getByLabel('Browser test', { exact: true }).waitFor({ timeout: left() });
  assert(await ap.getByLabel('Browser test', { exact: true }).isChecked(), 'the e-mail switch is off after a reload');
  await assertLabelled(ap, '/settings/notifications');
  await shot(ap, 'settings-notifications');
  await phoneShot(ap, 'settings-notifications');
  log('test', 'notifications: the channel, its e-mail switch (on, kept), and "went live"');

  // --- 7. password reset -----------------------------------------------------------------------
  await sp.goto(`${url}/reset`, { waitUntil: 'load', timeout: left() });
  await sp.getByLabel('E-mail').fill(CAROL.email, { timeout: left() });
  await assertLabelled(sp, '/reset');
  await shot(sp, 'reset');
  await phoneShot(sp, 'reset');
  await sp.getByRole('button', { name: 'Send reset link' }).click();
  await sp.locator('#reset-done').waitFor({ timeout: left() });
  const mail = await sink.waitFor(CAROL.email, left());
  const m = /(https?:\/\/\S+\/reset\?token=[A-Za-z0-9_-]+)/.exec(mail.text);
  assert(m && m[1].startsWith(`${url}/reset?token=`), `no reset link in the mail:\n${mail.text}`);
  await sp.goto(m[1], { waitUntil: 'load', timeout: left() });
  const fresh = 'carol new password 2';
  await sp.getByLabel('New password').fill(fresh, { timeout: left() });
  await assertLabelled(sp, '/reset?token=');
  await shot(sp, 'reset-token');
  await phoneShot(sp, 'reset-token');
  await sp.getByLabel('New password').press('Enter');
  await said(sp, /password is changed/, 'setting the new password');
  const lr = await api('/auth/login', {
    method: 'POST', headers: { 'Content-Type': 'application/json', Origin: url }, body: JSON.stringify({ login: CAROL.name, password: fresh }),
  });
  assert(lr.status === 200, `carol's login with the new password: HTTP ${lr.status}`);
  await shot(sp, 'reset-done');
  log('test', 'password reset by mail: carol logs in with the new password');
}

async function testRegistrationClosed(ctx) {
  const { dir } = ctx;
  const hearth = await startHearth(dir, { HEARTH_SITE_ALLOW_REGISTRATION: 'false', HEARTH_XMPP_FEDERATION: 'false' });
  ctx.hearth = hearth;
  const { url } = hearth;
  const site = await fetch(`${url}/api/v1/site`);
  assert(site.status === 200, `GET /site: HTTP ${site.status}`);
  const s = await site.json();
  assert(s.allow_registration === false, `GET /site: ${JSON.stringify(s)}`);
  const page = await newPage(ctx, dir, 'visitor');
  await page.goto(`${url}/register`, { waitUntil: 'load', timeout: left() });
  const closed = page.locator('#registration-closed');
  await closed.waitFor({ timeout: left() });
  const text = (await closed.innerText()).replace(/\s+/g, ' ');
  assert(/registration is closed on this site/i.test(text), `/register says: ${text}`);
  assert(await page.getByLabel('User name').count() === 0, 'the sign-up form is still there');
  await until('the header to drop its sign-up link', async () => ({ ok: (await page.locator('#nav-register').count()) === 0 }));
  assert(await page.getByRole('link', { name: 'Log in' }).count() >= 1, 'no way to log in from /register');
  await assertLabelled(page, '/register (closed)');
  await shot(page, 'register-closed');
  await phoneShot(page, 'register-closed');
  log('test', `/register: "${text}"`);
  await page.goto(`${url}/login`, { waitUntil: 'load', timeout: left() });
  await page.getByLabel('Name or e-mail').waitFor({ timeout: left() });
  assert(await page.getByRole('link', { name: 'Create an account' }).count() === 0, '/login offers sign-up on a closed site');
}

runTests(kit, [
  ['topics as admin, API keys, a channel in a topic, search, notifications, password reset', testPages, TIMEOUT_S],
  ['registration closed', testRegistrationClosed, 25],
], { slackS: 20, consoleTail: 20 });
