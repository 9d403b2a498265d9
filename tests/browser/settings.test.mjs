// Browser test of the settings pages a streamer uses beyond streaming:
//
//   1. register (open registration), open a channel;
//   2. channel images: a file that is not an image and one that is too big
//      are refused on the page with a message; a real PNG becomes the
//      avatar (the page shows it, the server serves it), another the banner;
//      the avatar is removed again;
//   3. protection: tick "Protected", save; make an invite code (shown once:
//      the API lets a guest in with it and not without), invite a user by
//      name, withdraw the invitation, remove the code;
//   4. two-factor login: set it up from the key the page shows (the test
//      computes the codes, RFC 6238), a wrong code is refused, a right one
//      turns it on; a fresh browser's login then asks for a code, with the
//      keyboard's focus in the new field, and gets in with one; two-factor
//      login is turned off with the password;
//   5. every form control on these pages has a label, and on a phone-sized
//      screen (390x844) they do not scroll sideways.
//
// Screenshots go to test-artifacts/browser/settings-*.png, the browsers'
// console to settings-console.log. The last line printed is
// "N passed, M failed".
import {
  Timeout, assert, captureConsole, launchBrowser, log, runTests, sleep, solidPng, startHearth, testKit, totpCode,
} from './lib.mjs';

const kit = testKit('settings', { fullPage: true });
const { left, shot, phoneShot, assertLabelled } = kit;
const PASSWORD = 'correct horse battery';

// The text of the page's status line (role=status) or alert, once one says something.
async function said(page, locator, re, what) {
  await locator.filter({ hasText: re }).first().waitFor({ timeout: left() }).catch(async () => {
    throw new Timeout(`${what}: no ${re} on the page (alerts: ${JSON.stringify(await page.locator('[role=alert]').allInnerTexts())})`);
  });
}

async function testSettings(ctx) {
  const { dir } = ctx;
  const hearth = await startHearth(dir);
  ctx.hearth = hearth;
  log('test', `hearth on ${hearth.url}`);
  const api = (p, init) => fetch(`${hearth.url}/api/v1${p}`, init);

  const browser = await launchBrowser(dir);
  const page = browser.pages()[0] || (await browser.newPage());
  ctx.pages.push(['streamer', page]);
  ctx.consoles.push(captureConsole(page, 'streamer'));
  page.on('dialog', (d) => void d.accept()); // "Make a new invite code?" and the like
  const status = page.locator('[role=status]');
  const alert = page.locator('[role=alert]');

  // --- register, open a channel ----------------------------------------------------------
  const name = `st${Date.now().toString(36)}`;
  await page.goto(`${hearth.url}/register`, { waitUntil: 'load', timeout: left() });
  await page.getByLabel('User name').fill(name, { timeout: left() });
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.waitForURL('**/settings/channels', { timeout: left() });
  await page.getByLabel('Title').fill('Members only');
  await page.getByRole('button', { name: 'Create channel' }).click();
  await page.waitForURL('**/settings/channels/*', { timeout: left() });
  const slug = decodeURIComponent(new URL(page.url()).pathname.split('/').pop());
  await page.locator('#stream-key').waitFor({ timeout: left() });
  log('test', `"${name}" opened channel "${slug}"`);

  // --- images ------------------------------------------------------------------------------
  const avatarError = page.locator('#e-avatar-error');
  await page.setInputFiles('#e-avatar', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
  await avatarError.waitFor({ timeout: left() });
  assert(/not a PNG, JPEG or WebP/.test(await avatarError.innerText()), `wrong type: "${await avatarError.innerText()}"`);
  await page.setInputFiles('#e-avatar', { name: 'huge.png', mimeType: 'image/png', buffer: Buffer.alloc(1536 * 1024, 7) });
  await said(page, avatarError, /at most 1 MiB/, 'a 1.5 MiB avatar');
  assert(await page.locator('img.preview.avatar').count() === 0, 'a refused file became the avatar');
  await page.setInputFiles('#e-avatar', { name: 'avatar.png', mimeType: 'image/png', buffer: solidPng(64, 64) });
  await said(page, status, /Avatar updated/, 'uploading the avatar');
  assert(await avatarError.count() === 0, 'the old error stayed after a good upload');
  const avatarUrl = await page.locator('img.preview.avatar').getAttribute('src');
  assert(avatarUrl && avatarUrl.includes(`/api/v1/channels/${slug}/avatar`), `avatar preview src: ${avatarUrl}`);
  const img = await fetch(new URL(avatarUrl, hearth.url));
  assert(img.status === 200 && img.headers.get('content-type') === 'image/png', `GET avatar: ${img.status} ${img.headers.get('content-type')}`);
  const shown = await page.locator('img.preview.avatar').evaluate((el) => el.complete && el.naturalWidth);
  assert(shown === 64, `the avatar preview did not load (naturalWidth ${shown})`);
  await page.setInputFiles('#e-banner', { name: 'banner.png', mimeType: 'image/png', buffer: solidPng(800, 200, [40, 90, 200]) });
  await said(page, status, /Banner updated/, 'uploading the banner');
  await page.locator('img.preview.banner').waitFor({ timeout: left() });
  log('test', 'avatar and banner uploaded; a text file and a 1.5 MiB file were refused');
  await shot(page, 'images');
  await page.getByRole('button', { name: 'Remove avatar' }).click();
  await said(page, status, /Avatar removed/, 'removing the avatar');
  assert(await page.locator('img.preview.avatar').count() === 0, 'the avatar preview stayed');
  const ch = await (await api(`/channels/${slug}`)).json();
  assert(ch.avatar_url === null && typeof ch.banner_url === 'string', `after removal: avatar ${ch.avatar_url}, banner ${ch.banner_url}`);

  // --- protection ------------------------------------------------------------------------------
  await page.getByLabel(/^Protected/).check();
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await said(page, status, /^Saved\.$/, 'saving "protected"');
  await page.locator('#protection').waitFor({ timeout: left() });
  assert((await api(`/channels/${slug}`)).status >= 400, 'a guest still sees the protected channel');
  await page.locator('#invite-code-new').click();
  await page.locator('#invite-code').waitFor({ timeout: left() });
  const code = await page.locator('#invite-code').inputValue();
  const inviteUrl = await page.locator('#invite-url').inputValue();
  assert(/^[A-Za-z0-9_-]{22}$/.test(code), `invite code "${code}"`);
  assert(inviteUrl === `${hearth.url}/c/${slug}?invite=${code}`, `invite URL ${inviteUrl}`);
  const withCode = await api(`/channels/${slug}?invite=${encodeURIComponent(code)}`);
  assert(withCode.status === 200, `a guest with the code: HTTP ${withCode.status}`);
  log('test', 'protected; the invite code the page showed lets a guest in');

  await page.getByLabel('Invite a user by name').fill('nobody-here');
  await page.getByLabel('Invite a user by name').press('Enter');
  await said(page, alert, /./, 'inviting an unknown user');
  await page.getByLabel('Invite a user by name').fill('alice');
  await page.getByLabel('Invite a user by name').press('Enter');
  await said(page, status, /alice is invited/, 'inviting alice');
  await page.locator('#invites li', { hasText: 'alice' }).waitFor({ timeout: left() });
  await assertLabelled(page, '/settings/channels/<slug> (protected)');
  await shot(page, 'protection');
  await phoneShot(page, 'protection');
  await page.getByRole('button', { name: 'Withdraw the invitation of alice' }).click();
  await said(page, status, /no longer invited/, 'withdrawing the invitation');
  await page.getByText('Nobody is invited.').waitFor({ timeout: left() });
  await page.getByRole('button', { name: 'Remove the invite code' }).click();
  await said(page, status, /invite code is removed/, 'removing the invite code');
  const noCode = await api(`/channels/${slug}?invite=${encodeURIComponent(code)}`);
  assert(noCode.status >= 400, `the removed code still works: HTTP ${noCode.status}`);
  log('test', 'invited and uninvited alice; the removed code no longer works');
  if (await page.locator('#chat-settings').count()) await shot(page, 'chat');

  // --- two-factor login -----------------------------------------------------------------------
  await page.getByRole('link', { name: 'Profile' }).click();
  await page.locator('#totp-begin').waitFor({ timeout: left() });
  // Set up early in a 30 s step: the test confirms with the previous step's
  // code and logs in with the current one, which must be a later step.
  const into = (Date.now() / 1000) % 30;
  if (into > 24) await sleep((30.5 - into) * 1000);
  await page.locator('#totp-begin').click();
  await page.locator('#totp-secret').waitFor({ timeout: left() });
  const secret = (await page.locator('#totp-secret').inputValue()).replace(/\s+/g, '');
  const uri = await page.locator('#totp-uri').getAttribute('href');
  assert(/^[A-Z2-7]{16,}$/.test(secret), `TOTP secret "${secret}"`);
  assert(uri.startsWith('otpauth://totp/') && uri.includes(`secret=${secret}`) && uri.includes(name), `otpauth URI ${uri}`);
  const focused = await page.evaluate(() => document.activeElement?.id);
  assert(focused === 'totp-code', `after "Set up", the focus is on #${focused}, not the code field`);
  await assertLabelled(page, '/settings (two-factor setup)');
  await shot(page, 'totp-setup');
  await phoneShot(page, 'totp-setup');
  const now = Date.now() / 1000;
  const valid = new Set([-30, 0, 30].map((d) => totpCode(secret, now + d)));
  const wrong = ['123456', '654321', '111111'].find((c) => !valid.has(c));
  await page.getByLabel('Code from your app').fill(wrong);
  await page.getByLabel('Code from your app').press('Enter');
  await said(page, alert, /wrong code/i, 'a wrong setup code');
  await page.getByLabel('Code from your app').fill(totpCode(secret, Date.now() / 1000 - 30));
  await page.getByRole('button', { name: 'Turn on' }).click();
  await said(page, status, /Two-factor login is on/, 'turning two-factor login on');
  await page.locator('#totp .badge.on').waitFor({ timeout: left() });
  log('test', 'two-factor login is on');

  // A fresh browser: the login asks for a code, and takes the current one.
  const other = await launchBrowser(dir);
  const lp = other.pages()[0] || (await other.newPage());
  ctx.pages.push(['login', lp]);
  ctx.consoles.push(captureConsole(lp, 'login'));
  await lp.goto(`${hearth.url}/login?next=${encodeURIComponent('/settings')}`, { waitUntil: 'load', timeout: left() });
  await lp.getByLabel('Name or e-mail').fill(name, { timeout: left() });
  await lp.getByLabel('Password').fill(PASSWORD);
  await lp.getByLabel('Password').press('Enter');
  await lp.locator('#totp').waitFor({ timeout: left() });
  await sleep(100);
  const f2 = await lp.evaluate(() => document.activeElement?.id);
  assert(f2 === 'totp', `when the code is asked for, the focus is on #${f2}`);
  await assertLabelled(lp, '/login (code)');
  await shot(lp, 'login-code');
  await lp.getByLabel('Authenticator code').fill(totpCode(secret, Date.now() / 1000));
  await lp.getByLabel('Authenticator code').press('Enter');
  await lp.waitForURL('**/settings', { timeout: left() });
  await lp.locator('#totp .badge.on').waitFor({ timeout: left() });
  log('test', 'logged in with password and code in a fresh browser');

  await lp.getByLabel('Or your password').fill(PASSWORD);
  await lp.getByRole('button', { name: 'Turn off two-factor login' }).click();
  await said(lp, lp.locator('[role=status]'), /Two-factor login is off/, 'turning two-factor login off');
  await lp.locator('#totp-begin').waitFor({ timeout: left() });
  const me = await lp.evaluate(() => fetch('/api/v1/me').then((r) => r.json()));
  assert(me.user && me.user.totp_enabled === false, `GET /me after turning it off: ${JSON.stringify(me)}`);
  await assertLabelled(lp, '/settings');
  await shot(lp, 'profile-tab');
  await phoneShot(lp, 'profile-tab');
  log('test', 'two-factor login is off again');
}

runTests(kit, [['images, protection, invite codes and two-factor login through the settings pages', testSettings]]);
