// The chat client: one XMPP session over Hearth's WebSocket endpoint
// (RFC 7395, strophe.js), in one channel's room.
//
// How it works. GET /api/v1/channels/<slug>/chat (panel.tsx) says where the
// room is. A guest logs in with SASL ANONYMOUS on guest.DOMAIN; a signed-in
// user asks POST /api/v1/chat/token for a short-lived token and logs in with
// SASL PLAIN as NAME@DOMAIN with the token as password, so the account
// password never reaches the page. Then it joins ROOM/NICK (XEP-0045) asking
// for no join history, and fetches the last 50 messages from the room's
// archive instead (XEP-0313 MAM with RSM <before/>): the archive ids are the
// stanza-ids (XEP-0359) live messages carry, so history and live messages
// merge without duplicates, and a retraction (XEP-0424/0425) names the
// message it removes by that id, live or in the archive.
//
// The client keeps the model (messages, occupants, own role, status, last
// error) and calls onChange after every change; panel.tsx renders it. Text
// from the network is read with textContent and stays a string: the UI puts
// it into text nodes only, never into HTML.
//
// A dropped connection is retried with exponential backoff (1 s doubling to
// 30 s, with jitter), each attempt with a fresh token; a ban, a kick or
// stop() ends the retries. A ping every 50 s keeps the stream from the
// server's idle timeout.
import { $iq, $msg, $pres, Strophe } from 'strophe.js';

export const NS = {
  MUC: 'http://jabber.org/protocol/muc',
  MUC_USER: 'http://jabber.org/protocol/muc#user',
  MUC_ADMIN: 'http://jabber.org/protocol/muc#admin',
  MAM: 'urn:xmpp:mam:2',
  RSM: 'http://jabber.org/protocol/rsm',
  FORWARD: 'urn:xmpp:forward:0',
  DELAY: 'urn:xmpp:delay',
  SID: 'urn:xmpp:sid:0',
  OCCUPANT_ID: 'urn:xmpp:occupant-id:0',
  RETRACT: 'urn:xmpp:message-retract:1',
  RETRACT_0: 'urn:xmpp:message-retract:0',
  MODERATE: 'urn:xmpp:message-moderate:1',
  MODERATE_0: 'urn:xmpp:message-moderate:0',
  FASTEN: 'urn:xmpp:fasten:0',
  PING: 'urn:xmpp:ping',
  STANZAS: 'urn:ietf:params:xml:ns:xmpp-stanzas',
};

// What GET /api/v1/channels/<slug>/chat answers.
export interface ChatInfo {
  enabled: boolean;
  room: string;
  websocket: string;
  domain: string;
  guest_domain: string;
  muc_domain: string;
  guests_may_talk: boolean;
  slow_mode?: number;
  subject?: string | null;
  occupants?: number;
  can_moderate?: boolean;
  max_message_length?: number;
}

// How to log in: a guest (ANONYMOUS on guest_domain) or an account with a
// token (PLAIN).
export type Credentials = { anonymous: true } | { anonymous: false; jid: string; token: string };

export interface ChatMessage {
  key: string; // unique in the list: the stanza-id, or a local one
  id: string | null; // the room's stanza-id (what moderation names)
  nick: string;
  occupantId: string | null;
  text: string;
  ts: number; // ms since the epoch
  mine: boolean;
}

export interface Occupant {
  nick: string;
  role: string; // moderator | participant | visitor | none
  affiliation: string; // owner | admin | member | none | outcast
  jid: string | null; // real JID, when the room shows it to us
  occupantId: string | null;
}

export type ChatStatus = 'idle' | 'connecting' | 'joining' | 'joined' | 'waiting' | 'closed';

export interface ClientOptions {
  info: ChatInfo;
  nick: string;
  credentials: () => Promise<Credentials>;
  onChange: () => void;
  // The room refused the nick (conflict, not allowed): the panel asks for
  // another one. Returns nothing; the client stays out of the room.
  onNickRefused?: (reason: string) => void;
  history?: number;
}

const MAX_MESSAGES = 300;

// localStorage['hearth.chat.debug'] = '1': the XML both ways in the console.
function debug(): boolean {
  try {
    return localStorage.getItem('hearth.chat.debug') === '1';
  } catch {
    return false;
  }
}
const PING_MS = 50_000;

function child(el: Element | null | undefined, name: string, ns?: string): Element | null {
  if (!el) return null;
  for (const c of Array.from(el.children)) {
    if (c.localName === name && (!ns || c.namespaceURI === ns || c.getAttribute('xmlns') === ns)) return c;
  }
  return null;
}

function children(el: Element | null | undefined, name: string, ns?: string): Element[] {
  if (!el) return [];
  return Array.from(el.children).filter(
    (c) => c.localName === name && (!ns || c.namespaceURI === ns || c.getAttribute('xmlns') === ns),
  );
}

function bare(jid: string | null): string {
  return jid ? jid.split('/')[0].toLowerCase() : '';
}

function resource(jid: string | null): string {
  if (!jid) return '';
  const i = jid.indexOf('/');
  return i < 0 ? '' : jid.slice(i + 1);
}

// An error stanza's condition and text: ['forbidden', 'You are banned'].
export function stanzaError(el: Element | null): { condition: string; text: string } {
  const err = child(el, 'error');
  if (!err) return { condition: 'timeout', text: '' };
  let condition = 'undefined-condition';
  let text = '';
  for (const c of Array.from(err.children)) {
    if (c.localName === 'text') text = (c.textContent || '').trim();
    else if (c.namespaceURI === NS.STANZAS || c.getAttribute('xmlns') === NS.STANZAS) condition = c.localName;
  }
  return { condition, text };
}

// The WebSocket URL from what the API gave: a ws(s):// URL, an http(s)://
// one, or a path on this site.
export function websocketUrl(ws: string | undefined): string {
  const secure = location.protocol === 'https:';
  if (!ws) ws = '/xmpp-websocket';
  if (/^wss?:\/\//i.test(ws)) return ws;
  if (/^https?:\/\//i.test(ws)) return ws.replace(/^http/i, 'ws');
  return `${secure ? 'wss' : 'ws'}://${location.host}${ws.startsWith('/') ? '' : '/'}${ws}`;
}

function messageErrorText(condition: string, text: string): string {
  if (text) return text;
  switch (condition) {
    case 'resource-constraint':
      return 'You are sending messages too fast. Wait a moment.';
    case 'policy-violation':
      return 'The message was refused by the chat rules.';
    case 'forbidden':
      return 'You cannot send messages here right now (muted?).';
    case 'not-acceptable':
      return 'The message was refused (too long?).';
    case 'not-allowed':
      return 'You are not allowed to do that.';
    case 'item-not-found':
      return 'The chat room is gone.';
    case 'service-unavailable':
      return 'The chat is not available right now.';
    case 'timeout':
      return 'The chat server did not answer.';
    default:
      return `The chat server refused it (${condition}).`;
  }
}

function joinErrorText(condition: string, text: string): string {
  switch (condition) {
    case 'forbidden':
      return text || 'You are banned from this chat.';
    case 'conflict':
      return text || 'That name is already taken in this chat.';
    case 'jid-malformed':
    case 'not-acceptable':
      return text || 'That name is not allowed.';
    case 'registration-required':
    case 'not-authorized':
      return text || 'Log in to join this chat.';
    case 'service-unavailable':
      return text || 'The chat is full or not available right now.';
    case 'item-not-found':
      return text || 'This channel has no chat room.';
    default:
      return text || `Could not join the chat (${condition}).`;
  }
}

export class ChatClient {
  readonly info: ChatInfo;
  readonly room: string;
  messages: ChatMessage[] = [];
  occupants = new Map<string, Occupant>();
  status: ChatStatus = 'idle';
  nick: string;
  role = 'none';
  affiliation = 'none';
  subject = '';
  error = ''; // the latest problem, for the banner
  notice = ''; // the latest neutral news (kicked, reconnecting)
  historyLoaded = false;
  anonymous = true;
  jid = '';

  private opts: ClientOptions;
  private conn: InstanceType<typeof Strophe.Connection> | null = null;
  private gen = 0; // bumps on every connection attempt; stale callbacks check it
  private attempt = 0;
  private retryTimer = 0;
  private errorTimer = 0;
  private everJoined = false;
  private stopped = false;
  private retracted = new Set<string>();
  private mamQuery = '';
  private mamBuffer: ChatMessage[] = [];
  private mamRetracts: string[] = [];
  private localSeq = 0;
  private ownOccupantId: string | null = null;

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.info = opts.info;
    this.room = opts.info.room.toLowerCase();
    this.nick = opts.nick;
    this.subject = opts.info.subject || '';
  }

  get canModerate(): boolean {
    return this.status === 'joined' && this.role === 'moderator';
  }

  get canTalk(): boolean {
    return this.status === 'joined' && this.role !== 'visitor' && this.role !== 'none';
  }

  start(): void {
    this.stopped = false;
    this.error = '';
    this.notice = '';
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.gen++;
    clearTimeout(this.retryTimer);
    clearTimeout(this.errorTimer);
    const c = this.conn;
    this.conn = null;
    if (c) {
      try {
        if (this.status === 'joined') c.send($pres({ to: `${this.room}/${this.nick}`, type: 'unavailable' }));
        c.flush();
        c.disconnect('leaving');
      } catch {
        // already gone
      }
    }
    this.status = 'closed';
  }

  // Join again under another nick: leave and rejoin (works with every MUC,
  // unlike an in-room nick change).
  setNick(nick: string): void {
    nick = nick.trim();
    if (!nick || (nick === this.nick && this.status === 'joined')) return;
    const c = this.conn;
    if (c && this.status === 'joined') {
      c.send($pres({ to: `${this.room}/${this.nick}`, type: 'unavailable' }));
    }
    this.nick = nick;
    this.error = '';
    if (c && (this.status === 'joined' || this.status === 'joining')) {
      this.occupants.clear();
      this.join();
    } else if (this.status === 'closed' || this.status === 'idle') {
      this.start();
    }
    this.changed();
  }

  // Send a message to the room. false (and error set) when it cannot go.
  send(text: string): boolean {
    text = text.trim();
    if (!text) return false;
    const max = this.info.max_message_length || 500;
    if ([...text].length > max) {
      this.fail(`Messages are at most ${max} characters.`);
      return false;
    }
    if (!this.conn || this.status !== 'joined') {
      this.fail('Not connected to the chat yet.');
      return false;
    }
    const id = this.conn.getUniqueId('m');
    this.conn.send(
      $msg({ to: this.room, type: 'groupchat', id })
        .c('body')
        .t(text)
        .up()
        .c('origin-id', { xmlns: NS.SID, id }),
    );
    this.error = '';
    this.changed();
    return true;
  }

  // Take back one's own message (XEP-0424): the room tells everyone, and
  // leaves a tombstone in the archive.
  retract(m: ChatMessage): boolean {
    if (!m.id || !m.mine || !this.conn || this.status !== 'joined') return false;
    const id = this.conn.getUniqueId('r');
    this.conn.send(
      $msg({ to: this.room, type: 'groupchat', id })
        .c('retract', { xmlns: NS.RETRACT, id: m.id })
        .up()
        .c('store', { xmlns: 'urn:xmpp:hints' }),
    );
    return true;
  }

  // --- moderation (XEP-0425, XEP-0045 muc#admin) ------------------------------

  deleteMessage(m: ChatMessage, reason = ''): Promise<void> {
    if (!m.id) return Promise.reject(new Error('This message has no id the room knows.'));
    const iq = $iq({ type: 'set', to: this.room })
      .c('moderate', { xmlns: NS.MODERATE, id: m.id })
      .c('retract', { xmlns: NS.RETRACT })
      .up();
    if (reason) iq.c('reason').t(reason);
    return this.iq(iq).then(() => this.removeMessage(m.id as string));
  }

  kick(nick: string, reason = ''): Promise<void> {
    return this.admin({ nick, role: 'none' }, reason);
  }

  mute(nick: string, muted: boolean): Promise<void> {
    return this.admin({ nick, role: muted ? 'visitor' : 'participant' }, '');
  }

  ban(o: { nick: string; jid: string | null }, reason = ''): Promise<void> {
    // A ban names the account (bare JID); the room resolves a nick when that
    // is all a moderator can see.
    const item: Record<string, string> = { affiliation: 'outcast' };
    if (o.jid) item.jid = bare(o.jid);
    else item.nick = o.nick;
    return this.admin(item, reason);
  }

  occupantFor(m: ChatMessage): Occupant | null {
    if (m.occupantId) {
      for (const o of this.occupants.values()) if (o.occupantId === m.occupantId) return o;
    }
    return this.occupants.get(m.nick) || null;
  }

  private admin(item: Record<string, string>, reason: string): Promise<void> {
    const iq = $iq({ type: 'set', to: this.room }).c('query', { xmlns: NS.MUC_ADMIN }).c('item', item);
    if (reason) iq.c('reason').t(reason);
    return this.iq(iq).then(() => undefined);
  }

  private iq(b: ReturnType<typeof $iq>): Promise<Element> {
    return new Promise((resolve, reject) => {
      if (!this.conn || this.status !== 'joined') {
        reject(new Error('Not connected to the chat.'));
        return;
      }
      this.conn.sendIQ(
        b,
        (el) => resolve(el),
        (el) => {
          const { condition, text } = stanzaError(el);
          reject(new Error(messageErrorText(condition, text)));
        },
        15000,
      );
    });
  }

  // --- connection -----------------------------------------------------------------

  private changed(): void {
    this.opts.onChange();
  }

  // A refused message or action: shown until the next message goes out, or
  // for 10 s.
  private fail(msg: string): void {
    this.error = msg;
    clearTimeout(this.errorTimer);
    this.errorTimer = window.setTimeout(() => {
      if (this.error === msg && this.status === 'joined') {
        this.error = '';
        this.changed();
      }
    }, 10_000);
    this.changed();
  }

  private async connect(): Promise<void> {
    const gen = ++this.gen;
    clearTimeout(this.retryTimer);
    this.status = 'connecting';
    this.changed();
    let creds: Credentials;
    try {
      creds = await this.opts.credentials();
    } catch (e) {
      if (gen !== this.gen) return;
      this.error = `Could not get into the chat: ${(e as Error).message || e}`;
      this.retry(gen);
      return;
    }
    if (gen !== this.gen || this.stopped) return;
    this.anonymous = creds.anonymous;
    const conn = new Strophe.Connection(websocketUrl(this.info.websocket), {
      mechanisms: creds.anonymous ? [Strophe.SASLAnonymous] : [Strophe.SASLPlain],
      protocol: location.protocol === 'https:' ? 'wss' : 'ws',
    });
    this.conn = conn;
    if (debug()) {
      conn.rawInput = (data: string) => console.debug(`chat <- ${data}`);
      conn.rawOutput = (data: string) => console.debug(`chat -> ${data}`);
    }
    Strophe.setLogLevel(debug() ? Strophe.LogLevel.DEBUG : Strophe.LogLevel.WARN);
    const jid = creds.anonymous ? this.info.guest_domain : creds.jid;
    const pass = creds.anonymous ? '' : creds.token;
    conn.connect(jid, pass, (status, condition) => {
      if (gen !== this.gen) return;
      const S = Strophe.Status;
      switch (status) {
        case S.CONNECTED:
          this.jid = conn.jid;
          this.onConnected(conn, gen);
          break;
        case S.AUTHFAIL:
          this.error = creds.anonymous
            ? 'The chat does not let guests in right now.'
            : 'The chat did not accept your login; trying again.';
          break;
        case S.CONNFAIL:
          if (debug()) console.debug(`chat: connection failed: ${condition}`);
          break;
        case S.DISCONNECTED:
          this.conn = null;
          this.retry(gen);
          break;
        default:
          break;
      }
    });
  }

  // Try again after a while, unless stopped or told not to.
  private retry(gen: number): void {
    if (gen !== this.gen || this.stopped) return;
    if (this.status === 'closed') {
      this.changed();
      return;
    }
    const delay = Math.min(30_000, 1000 * 2 ** Math.min(this.attempt, 5)) * (0.75 + Math.random() * 0.5);
    this.attempt++;
    this.status = 'waiting';
    this.occupants.clear();
    this.notice = this.everJoined ? 'Chat disconnected; reconnecting…' : 'Cannot reach the chat; retrying…';
    this.changed();
    this.retryTimer = window.setTimeout(() => {
      if (gen === this.gen && !this.stopped) void this.connect();
    }, delay);
  }

  // The stream is up: handlers, keepalive, join.
  private onConnected(conn: InstanceType<typeof Strophe.Connection>, gen: number): void {
    const live = () => gen === this.gen;
    conn.addHandler(
      (p) => {
        if (live()) this.onPresence(p);
        return live();
      },
      null,
      'presence',
      null,
      null,
      this.room,
      { matchBareFromJid: true },
    );
    conn.addHandler(
      (m) => {
        if (live()) this.onMessage(m);
        return live();
      },
      null,
      'message',
      null,
      null,
      null,
    );
    // Answer the server's pings (XEP-0199).
    conn.addHandler(
      (iq) => {
        if (!live()) return false;
        conn.send($iq({ type: 'result', to: iq.getAttribute('from') || '', id: iq.getAttribute('id') || '' }));
        return true;
      },
      NS.PING,
      'iq',
      'get',
    );
    conn.addTimedHandler(PING_MS, () => {
      if (!live() || !this.conn) return false;
      this.conn.sendIQ(
        $iq({ type: 'get', to: this.info.domain }).c('ping', { xmlns: NS.PING }),
        () => undefined,
        () => undefined,
        20000,
      );
      return true;
    });
    this.join();
  }

  private join(): void {
    if (!this.conn) return;
    this.status = 'joining';
    this.historyLoaded = false;
    this.conn.send(
      $pres({ to: `${this.room}/${this.nick}` })
        .c('x', { xmlns: NS.MUC })
        .c('history', { maxstanzas: '0' }),
    );
    this.changed();
  }

  // --- presence -------------------------------------------------------------------

  private onPresence(p: Element): void {
    const from = p.getAttribute('from');
    const nick = resource(from);
    const type = p.getAttribute('type');
    const x = child(p, 'x', NS.MUC_USER);
    const codes = children(x, 'status').map((s) => s.getAttribute('code'));
    const item = child(x, 'item');
    const self = codes.includes('110') || (nick !== '' && nick === this.nick);

    if (type === 'error') {
      if (nick !== this.nick && nick !== '') return;
      const { condition, text } = stanzaError(p);
      const msg = joinErrorText(condition, text);
      if (condition === 'conflict' || condition === 'jid-malformed' || condition === 'not-acceptable') {
        this.status = 'joining';
        this.error = msg;
        this.changed();
        this.opts.onNickRefused?.(msg);
        return;
      }
      this.error = msg;
      this.status = 'closed';
      this.stopAfterRefusal();
      return;
    }

    if (type === 'unavailable') {
      this.occupants.delete(nick);
      if (codes.includes('303') && item?.getAttribute('nick')) {
        // a nick change: the new presence follows
        if (self) this.nick = item.getAttribute('nick') as string;
        this.changed();
        return;
      }
      if (self) {
        const reason = (child(item, 'reason')?.textContent || '').trim();
        if (codes.includes('301')) {
          this.error = `You were banned from this chat${reason ? `: ${reason}` : '.'}`;
          this.status = 'closed';
          this.stopAfterRefusal();
        } else if (codes.includes('307')) {
          this.notice = `You were removed from the chat by a moderator${reason ? `: ${reason}` : '.'}`;
          this.status = 'closed';
          this.stopAfterRefusal();
        } else if (codes.includes('332') || child(x, 'destroy')) {
          this.notice = 'The chat room was closed.';
          this.status = 'closed';
          this.stopAfterRefusal();
        }
      }
      this.changed();
      return;
    }

    const o: Occupant = {
      nick,
      role: item?.getAttribute('role') || 'participant',
      affiliation: item?.getAttribute('affiliation') || 'none',
      jid: item?.getAttribute('jid') || null,
      occupantId: child(p, 'occupant-id', NS.OCCUPANT_ID)?.getAttribute('id') || null,
    };
    this.occupants.set(nick, o);
    if (self) {
      const wasJoined = this.status === 'joined';
      this.nick = nick;
      this.role = o.role;
      this.affiliation = o.affiliation;
      this.ownOccupantId = o.occupantId;
      if (!wasJoined) {
        this.status = 'joined';
        this.everJoined = true;
        this.attempt = 0;
        this.notice = '';
        this.error = '';
        this.markMine();
        this.loadHistory();
      }
    }
    this.changed();
  }

  // Banned, kicked, refused: no automatic retry; the panel offers a button.
  private stopAfterRefusal(): void {
    this.gen++;
    this.occupants.clear();
    clearTimeout(this.retryTimer);
    const c = this.conn;
    this.conn = null;
    try {
      c?.disconnect('refused');
    } catch {
      // gone
    }
    this.changed();
  }

  // --- messages --------------------------------------------------------------------

  private onMessage(m: Element): void {
    const from = m.getAttribute('from');
    const type = m.getAttribute('type');

    // Archive results (XEP-0313) for the query in flight.
    const result = child(m, 'result', NS.MAM);
    if (result) {
      if (bare(from) && bare(from) !== this.room) return;
      if (result.getAttribute('queryid') !== this.mamQuery) return;
      const fwd = child(result, 'forwarded', NS.FORWARD);
      const inner = child(fwd, 'message');
      if (!inner) return;
      const stamp = child(fwd, 'delay', NS.DELAY)?.getAttribute('stamp');
      const retract = this.retractionOf(inner);
      if (retract) {
        this.mamRetracts.push(retract);
        return;
      }
      const msg = this.parse(inner, result.getAttribute('id'), stamp);
      if (msg) this.mamBuffer.push(msg);
      return;
    }

    if (bare(from) !== this.room) return;

    if (type === 'error') {
      const { condition, text } = stanzaError(m);
      this.fail(messageErrorText(condition, text));
      return;
    }

    const retract = this.retractionOf(m);
    if (retract) {
      this.removeMessage(retract);
      return;
    }

    const subject = child(m, 'subject');
    if (subject && !child(m, 'body')) {
      this.subject = (subject.textContent || '').trim();
      this.changed();
      return;
    }

    const msg = this.parse(m, null, child(m, 'delay', NS.DELAY)?.getAttribute('stamp'));
    if (!msg) return;
    if (msg.id && (this.retracted.has(msg.id) || this.messages.some((x) => x.id === msg.id))) return;
    this.messages.push(msg);
    if (this.messages.length > MAX_MESSAGES) this.messages.splice(0, this.messages.length - MAX_MESSAGES);
    this.changed();
  }

  // The stanza-id a retraction removes, if this message is one: XEP-0425
  // v0.3 / XEP-0424 v1 (<retract id/> with <moderated/> inside), or the
  // older fastening form (<apply-to id><moderated><retract/>).
  private retractionOf(m: Element): string | null {
    const r = child(m, 'retract', NS.RETRACT);
    if (r?.getAttribute('id')) return r.getAttribute('id');
    const a = child(m, 'apply-to', NS.FASTEN);
    if (a?.getAttribute('id') && (child(a, 'moderated', NS.MODERATE_0) || child(a, 'retract', NS.RETRACT_0))) {
      return a.getAttribute('id');
    }
    return null;
  }

  private parse(m: Element, archiveId: string | null, stamp: string | null | undefined): ChatMessage | null {
    const body = child(m, 'body');
    if (!body) return null;
    // A tombstone left in the archive where a message was retracted.
    if (child(m, 'retracted', NS.RETRACT) || child(m, 'moderated', NS.MODERATE) || child(m, 'moderated', NS.MODERATE_0)) {
      return null;
    }
    let id = archiveId;
    if (!id) {
      for (const s of children(m, 'stanza-id', NS.SID)) {
        if (bare(s.getAttribute('by')) === this.room) id = s.getAttribute('id');
      }
    }
    const nick = resource(m.getAttribute('from'));
    const occupantId = child(m, 'occupant-id', NS.OCCUPANT_ID)?.getAttribute('id') || null;
    let ts = stamp ? Date.parse(stamp) : NaN;
    if (!Number.isFinite(ts)) ts = Date.now();
    const text = body.textContent || '';
    if (!text.trim()) return null;
    return {
      key: id ? `s:${id}` : `l:${++this.localSeq}`,
      id,
      nick,
      occupantId,
      text,
      ts,
      mine: occupantId && this.ownOccupantId ? occupantId === this.ownOccupantId : nick === this.nick,
    };
  }

  private markMine(): void {
    for (const m of this.messages) {
      m.mine = m.occupantId && this.ownOccupantId ? m.occupantId === this.ownOccupantId : m.nick === this.nick;
    }
  }

  private removeMessage(id: string): void {
    this.retracted.add(id);
    const n = this.messages.length;
    this.messages = this.messages.filter((x) => x.id !== id);
    if (this.messages.length !== n) this.changed();
  }

  // The last `history` messages from the archive (RSM <before/> with no id:
  // the newest page), merged into what is on screen.
  private loadHistory(): void {
    const conn = this.conn;
    if (!conn) return;
    const qid = conn.getUniqueId('mam');
    this.mamQuery = qid;
    this.mamBuffer = [];
    this.mamRetracts = [];
    const max = String(this.opts.history ?? 50);
    conn.sendIQ(
      $iq({ type: 'set', to: this.room })
        .c('query', { xmlns: NS.MAM, queryid: qid })
        .c('set', { xmlns: NS.RSM })
        .c('max')
        .t(max)
        .up()
        .c('before'),
      () => {
        if (qid !== this.mamQuery) return;
        for (const id of this.mamRetracts) this.retracted.add(id);
        const have = new Set(this.messages.map((x) => x.id).filter(Boolean));
        const older = this.mamBuffer.filter((x) => !(x.id && (have.has(x.id) || this.retracted.has(x.id))));
        const merged = [...older, ...this.messages.filter((x) => !(x.id && this.retracted.has(x.id)))];
        merged.sort((a, b) => a.ts - b.ts);
        this.messages = merged.slice(-MAX_MESSAGES);
        this.mamBuffer = [];
        this.mamQuery = '';
        this.historyLoaded = true;
        this.markMine();
        this.changed();
      },
      (el) => {
        if (qid !== this.mamQuery) return;
        this.mamQuery = '';
        this.mamBuffer = [];
        this.historyLoaded = true;
        const { condition } = stanzaError(el);
        if (condition !== 'feature-not-implemented' && condition !== 'service-unavailable') {
          this.notice = 'Could not load the earlier messages.';
        }
        this.changed();
      },
      20000,
    );
  }
}
