// Browser test of the web chat (web/src/chat/), two people in one channel's
// room over Hearth's XMPP WebSocket:
//
//   1. the channel's owner logs in and opens /c/<slug>: the chat joins under
//      the account name, with role moderator;
//   2. a guest (a second browser, no cookies) opens the same page, picks a
//      name and says something; the owner sees it and answers; the guest
//      sees the answer;
//   3. the guest sends markup (<b>, <img onerror>): both see it as text, and
//      no element (and no script) came of it;
//   4. the owner deletes the guest's first message from the moderation menu
//      (XEP-0425): it disappears for both;
//   5. the guest reloads: the same name comes back (localStorage), and the
//      history from the archive (MAM) has the answer but not the deleted
//      message;
//   6. the pop-out page /c/<slug>/chat and its OBS overlay (?overlay=1) show
//      the history too;
//   7. the guest deletes one of its own messages (XEP-0424): gone for both;
//   8. what the room refuses reaches the guest: a banned word, too many
//      messages, a mute (no input then), a kick (out, may come back), a ban
//      (out, and refused when joining again).
//
// Screenshots go to test-artifacts/browser/chat-*.png, the browsers' console
// to chat-console.log. The last line printed is "N passed, M failed".
import {
  assert, captureConsole, launchBrowser, log, runTests, startHearth, testKit,
} from './lib.mjs';

const kit = testKit('chat', { everyMs: 200 });
const { left, until, shot } = kit;

const HELLO = 'hello from the guest';
const ANSWER = 'hi guest, welcome to the channel';
const MARKUP = '<b>x</b><img src=x onerror="window.__chatXss=1">';
const GUEST = 'Wanderer';

// A page that logs the chat's XML both ways to its console (chat-console.log).
async function chatPage(ctx, context, who) {
  const page = context.pages()[0] || (await context.newPage());
  await context.addInitScript(() => localStorage.setItem('hearth.chat.debug', '1'));
  ctx.pages.push([who, page]);
  ctx.consoles.push(captureConsole(page, who));
  return page;
}

// What the chat panel on a page shows: status, nick, role, and each message.
function chatState(page) {
  return page.evaluate(() => {
    const p = document.querySelector('.chat-panel');
    return {
      status: p?.getAttribute('data-status') || null,
      nick: p?.getAttribute('data-nick') || null,
      role: p?.getAttribute('data-role') || null,
      history: p?.getAttribute('data-history') || null,
      error: [...document.querySelectorAll('.chat-error')].map((e) => e.textContent).join(' | '),
      notice: document.querySelector('.chat-notice')?.textContent || '',
      messages: [...document.querySelectorAll('.chat-msg')].map((li) => ({
        id: li.getAttribute('data-id'),
        nick: li.querySelector('.chat-nick')?.textContent,
        text: li.querySelector('.chat-text')?.textContent,
      })),
      // elements inside message texts: there must never be any
      markup: document.querySelectorAll('.chat-text *').length,
      xss: window.__chatXss === 1,
    };
  });
}

async function waitJoined(page, who, { role } = {}) {
  return until(`${who} to join the chat${role ? ` as ${role}` : ''}`, async () => {
    const s = await chatState(page);
    return { ok: s.status === 'joined' && (!role || s.role === role), why: JSON.stringify({ ...s, messages: s.messages.length }), s };
  });
}

async function waitMessage(page, who, text, { present = true } = {}) {
  return until(`${who} to ${present ? 'see' : 'no longer see'} "${text}"`, async () => {
    const s = await chatState(page);
    const has = s.messages.some((m) => m.text === text);
    return { ok: has === present, why: `${s.status}; ${s.error}; messages: ${JSON.stringify(s.messages.map((m) => `${m.nick}: ${m.text}`))}`, s };
  });
}

async function say(page, text) {
  const input = page.locator('#chat-input');
  await input.fill(text, { timeout: left() });
  await input.press('Enter');
  await until('the input to clear after sending', async () => ({ ok: (await input.inputValue()) === '' }));
}

async function testGuestAndOwner(ctx) {
  const { dir } = ctx;
  // lib.mjs puts the XMPP listeners on free ports; no federation here.
  const hearth = await startHearth(dir, {
    HEARTH_XMPP_FEDERATION: 'false',
    HEARTH_XMPP_MESSAGE_BURST: '5',
    HEARTH_XMPP_MESSAGE_INTERVAL: '30s',
  });
  ctx.hearth = hearth;
  const { slug } = hearth;
  log('test', `hearth on ${hearth.url}, channel "${slug}" owned by alice`);

  const info = await (await fetch(`${hearth.url}/api/v1/channels/${encodeURIComponent(slug)}/chat`)).json();
  log('test', `chat info: ${JSON.stringify(info)}`);
  assert(info.enabled === true && info.room === `${slug}@chat.${info.domain}`, `GET /channels/${slug}/chat: ${JSON.stringify(info)}`);

  // --- the owner: log in, open the channel ----------------------------------------
  const owner = await launchBrowser(dir);
  const op = await chatPage(ctx, owner, 'owner');
  await op.goto(`${hearth.url}/login`, { waitUntil: 'load', timeout: left() });
  await op.getByLabel('Name or e-mail').fill('alice', { timeout: left() });
  await op.getByLabel('Password').fill('pw12345678');
  await op.getByRole('button', { name: 'Log in' }).click();
  await op.locator('#nav-user').waitFor({ timeout: left() });
  await op.goto(`${hearth.url}/c/${encodeURIComponent(slug)}`, { waitUntil: 'load', timeout: left() });
  const oj = await waitJoined(op, 'the owner', { role: 'moderator' });
  assert(oj.s.nick === 'alice', `the owner is in the chat as "${oj.s.nick}", not alice`);
  log('test', `owner joined as ${oj.s.nick} (${oj.s.role})`);

  // --- the guest: own browser, picks a name, says hello ------------------------------
  const guest = await launchBrowser(dir);
  const gp = await chatPage(ctx, guest, 'guest');
  await gp.goto(`${hearth.url}/c/${encodeURIComponent(slug)}`, { waitUntil: 'load', timeout: left() });
  const gj = await waitJoined(gp, 'the guest');
  assert(/^guest-\d+$/.test(gj.s.nick), `the guest reads under "${gj.s.nick}", not a generated guest-NNNN`);
  assert(gj.s.role !== 'moderator', `a guest is ${gj.s.role}`);
  await gp.getByLabel('Your name in chat').fill(GUEST, { timeout: left() });
  await gp.getByRole('button', { name: 'Join chat' }).click();
  await until(`the guest to be in as ${GUEST}`, async () => {
    const s = await chatState(gp);
    return { ok: s.status === 'joined' && s.nick === GUEST, why: JSON.stringify(s) };
  });
  await gp.locator('#chat-input').waitFor({ timeout: left() });
  await say(gp, HELLO);

  // --- each sees the other ---------------------------------------------------------------
  const seen = await waitMessage(op, 'the owner', HELLO);
  const hello = seen.s.messages.find((m) => m.text === HELLO);
  assert(hello.nick === GUEST, `the owner sees "${HELLO}" from "${hello.nick}", not ${GUEST}`);
  assert(hello.id, 'the message has no stanza-id (XEP-0359) in the page: moderation cannot name it');
  log('test', `owner sees the guest's message (stanza-id ${hello.id})`);
  await say(op, ANSWER);
  const ans = await waitMessage(gp, 'the guest', ANSWER);
  assert(ans.s.messages.find((m) => m.text === ANSWER).nick === 'alice', 'the answer is not from alice');
  await waitMessage(gp, 'the guest', HELLO); // its own message came back from the room too

  // --- markup stays text -------------------------------------------------------------------
  await say(gp, MARKUP);
  for (const [who, page] of [['owner', op], ['guest', gp]]) {
    const s = (await waitMessage(page, `the ${who}`, MARKUP)).s;
    assert(s.markup === 0, `${who}: the message text became ${s.markup} element(s)`);
    assert(!s.xss, `${who}: the onerror handler in a message ran`);
  }
  log('test', 'markup in a message is shown as text on both pages');
  await shot(op, 'owner');
  await shot(gp, 'guest');

  // --- the owner deletes the guest's hello -------------------------------------------------
  const row = op.locator('.chat-msg', { hasText: HELLO });
  await row.hover();
  await row.getByRole('button', { name: `Moderate message from ${GUEST}` }).click({ timeout: left() });
  await shot(op, 'moderation-menu');
  await op.getByRole('menuitem', { name: 'Delete message' }).click({ timeout: left() });
  await waitMessage(op, 'the owner', HELLO, { present: false });
  await waitMessage(gp, 'the guest', HELLO, { present: false });
  const after = await chatState(gp);
  assert(after.messages.some((m) => m.text === ANSWER), 'deleting one message removed others too');
  log('test', 'the deleted message is gone for both');

  // --- the guest comes back: same name, history from the archive ---------------------------
  await gp.reload({ waitUntil: 'load', timeout: left() });
  const back = await until('the guest to rejoin with the history loaded', async () => {
    const s = await chatState(gp);
    return { ok: s.status === 'joined' && s.history === 'loaded', why: JSON.stringify(s), s };
  });
  assert(back.s.nick === GUEST, `after a reload the guest is "${back.s.nick}", not the remembered ${GUEST}`);
  const texts = back.s.messages.map((m) => m.text);
  assert(texts.includes(ANSWER) && texts.includes(MARKUP), `the history (MAM) lacks earlier messages: ${JSON.stringify(texts)}`);
  assert(!texts.includes(HELLO), `the deleted message is back in the history: ${JSON.stringify(texts)}`);
  assert(back.s.markup === 0 && !back.s.xss, 'markup from the history became elements');
  log('test', `history after a reload: ${JSON.stringify(texts)}`);

  // --- the pop-out and the OBS overlay ----------------------------------------------------------
  const pop = await owner.newPage();
  ctx.pages.push(['popout', pop]);
  ctx.consoles.push(captureConsole(pop, 'popout'));
  await pop.setViewportSize({ width: 420, height: 640 });
  await pop.goto(`${hearth.url}/c/${encodeURIComponent(slug)}/chat`, { waitUntil: 'load', timeout: left() });
  await waitMessage(pop, 'the pop-out', ANSWER);
  assert(await pop.locator('header.bar').count() === 0, 'the pop-out has the site header');
  assert(await pop.locator('#chat-input').count() === 1, 'the pop-out has no message input');
  await shot(pop, 'popout');
  await pop.goto(`${hearth.url}/c/${encodeURIComponent(slug)}/chat?overlay=1`, { waitUntil: 'load', timeout: left() });
  await waitMessage(pop, 'the overlay', ANSWER);
  assert(await pop.locator('#chat-input, .chat-mod-toggle').count() === 0, 'the overlay has an input or moderation buttons');
  const bg = await pop.evaluate(() => [getComputedStyle(document.documentElement).backgroundColor, getComputedStyle(document.body).backgroundColor]);
  assert(bg.every((c) => c === 'rgba(0, 0, 0, 0)' || c === 'transparent'), `the overlay background is not transparent: ${bg}`);
  await shot(pop, 'overlay');
  await pop.close();

  await testRefusals(ctx, op, gp, slug);
}

// What the room refuses, as the guest sees it: a banned word, too many
// messages, being muted, being banned.
async function testRefusals(ctx, op, gp, slug) {
  const errorOf = async (page) => (await chatState(page)).error;

  // A banned word (set through the API, as the owner): refused with an error
  // the guest sees; what the guest sends next arrives, and the refused one
  // never did (the room keeps order).
  const put = await op.evaluate(async (s) => {
    const me = await (await fetch('/api/v1/me')).json();
    const r = await fetch(`/api/v1/channels/${encodeURIComponent(s)}/banned-words`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token || '' },
      body: JSON.stringify({ words: ['turnip'] }),
    });
    return `${r.status} ${await r.text()}`;
  }, slug);
  assert(put.startsWith('200'), `PUT banned-words: ${put}`);
  let refused = null;
  for (let k = 1; k <= 5 && !refused; k++) {
    const text = `I like turnip soup #${k}`;
    await say(gp, text);
    // either the error comes back or the message does (the new words were
    // not loaded yet): wait for one of them
    const r = await until(`the room to refuse or deliver "${text}"`, async () => {
      const s = await chatState(gp);
      if (s.error) return { ok: true, refused: true, error: s.error };
      if (s.messages.some((m) => m.text === text)) return { ok: true, refused: false };
      return { ok: false, why: JSON.stringify(s.messages.slice(-3)) };
    });
    if (r.refused) refused = { text, error: r.error };
  }
  assert(refused, 'a message with a banned word was never refused');
  log('test', `banned word refused: "${refused.error}"`);
  await shot(gp, 'banned-word');
  await say(gp, 'a clean line');
  const clean = await waitMessage(op, 'the owner', 'a clean line');
  assert(!clean.s.messages.some((m) => m.text === refused.text), `the owner got the refused message "${refused.text}"`);
  assert(!(await errorOf(gp)), 'the error stayed after a message went through');

  // The guest takes back its own message (XEP-0424): gone for both.
  await waitMessage(gp, 'the guest', 'a clean line');
  await gp.locator('.chat-msg', { hasText: 'a clean line' }).getByRole('button', { name: 'Your message' }).click({ timeout: left() });
  await gp.getByRole('menuitem', { name: 'Delete my message' }).click({ timeout: left() });
  await waitMessage(gp, 'the guest', 'a clean line', { present: false });
  await waitMessage(op, 'the owner', 'a clean line', { present: false });
  log('test', 'the guest deleted its own message, for both');

  // Too many messages (the server runs with a burst of 5 and then one per
  // 30 s): the guest sees why.
  let rate = '';
  for (let k = 1; k <= 12 && !rate; k++) {
    await say(gp, `quick ${k}`);
    rate = await errorOf(gp);
  }
  rate = rate || (await until('a rate-limit error', async () => {
    const e = await errorOf(gp);
    return { ok: Boolean(e), e };
  })).e;
  assert(/slow|fast|many|wait/i.test(rate), `the rate-limit error says "${rate}"`);
  log('test', `rate limit shown: "${rate}"`);

  // Mute and unmute from the owner's list of people.
  const person = async (action) => {
    if ((await op.locator('.chat-people').count()) === 0) await op.locator('.chat-people-toggle').click();
    const li = op.locator(`.chat-person[data-nick="${GUEST}"]`);
    await li.getByRole('button', { name: `Moderate ${GUEST}` }).click({ timeout: left() });
    await op.getByRole('menuitem', { name: `${action} ${GUEST}` }).click({ timeout: left() });
  };
  await person('Mute');
  await until('the guest to be muted', async () => {
    const s = await chatState(gp);
    const input = await gp.locator('#chat-input').count();
    const note = await gp.locator('.chat-muted').count();
    return { ok: s.role === 'visitor' && input === 0 && note === 1, why: `${s.role} input=${input} note=${note}` };
  });
  await shot(gp, 'muted');
  await person('Unmute');
  await until('the guest to be unmuted', async () => {
    const s = await chatState(gp);
    return { ok: s.role === 'participant' && (await gp.locator('#chat-input').count()) === 1, why: s.role };
  });
  log('test', 'mute and unmute reach the guest');

  // A kick: the guest is out, told why, and may come back.
  await person('Kick');
  const kicked = await until('the guest to be kicked', async () => {
    const s = await chatState(gp);
    return { ok: s.status === 'closed' && /removed/i.test(s.notice), why: `${s.status}: ${s.notice} ${s.error}`, s };
  });
  log('test', `guest: "${kicked.s.notice}"`);
  await gp.getByRole('button', { name: 'Join again' }).click({ timeout: left() });
  await waitJoined(gp, 'the guest, after the kick');
  await until('the owner to see the guest back', async () => ({
    ok: (await op.locator(`.chat-person[data-nick="${GUEST}"]`).count()) === 1,
  }));

  // A ban: the guest is out, and stays out.
  await person('Ban');
  const banned = await until('the guest to be banned', async () => {
    const s = await chatState(gp);
    return { ok: s.status === 'closed' && /banned/i.test(s.error), why: `${s.status}: ${s.error}`, s };
  });
  log('test', `guest: "${banned.s.error}"`);
  await until('the guest to leave the owner\'s list', async () => ({
    ok: (await op.locator(`.chat-person[data-nick="${GUEST}"]`).count()) === 0,
  }));
  await gp.getByRole('button', { name: 'Join again' }).click({ timeout: left() });
  const again = await until('the guest to be refused again', async () => {
    const s = await chatState(gp);
    return { ok: s.status === 'closed' && /banned/i.test(s.error) && s.error !== banned.s.error, why: `${s.status}: ${s.error}`, s };
  });
  log('test', `guest, joining again: "${again.s.error}"`);
  await shot(gp, 'banned');
}

runTests(kit, [['a guest and the owner chat; the owner deletes a message; history and pop-out', testGuestAndOwner]], {
  what: 'the chat browser test',
  hearthTail: 40,
  consoleTail: 40,
  // the player polling an offline channel is noise here
  consoleFilter: (l) => !/m3u8|status of 404/.test(l),
});
