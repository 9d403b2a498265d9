// The chat panel: the channel page's <aside id="chat">, the pop-out page
// /c/<slug>/chat and its read-only OBS overlay (?overlay=1) all render this.
//
// It asks GET /api/v1/channels/<slug>/chat where the room is, waits for the
// session (GET /me) to know whether this is a guest, and runs one ChatClient
// (client.ts, loaded on demand so pages without chat do not carry strophe.js).
// The client owns the model; this component re-renders on its onChange.
//
// Guests read at once under a generated name (guest-1234) and pick their own
// before the first message, or keep the generated one; the choice is kept in
// localStorage. Signed-in users are in under their account name.
// Moderators (the room gives them role moderator) get a menu on every
// message (delete, kick, mute, ban the sender) and on every person in the
// list. The head counts the room as the server does (occupantCount).
// Everything from the network is rendered as text children: never as
// HTML.
import { useEffect, useRef, useState } from 'preact/hooks';

import { ApiError, enc, errorText, get, post } from '../api';
import { useSession } from '../app';
import type { ChatClient, ChatInfo, ChatMessage, Credentials, Occupant } from './client';
import './chat.css';

export type ChatMode = 'page' | 'popout' | 'overlay';

const NICK_KEY = 'hearth.chat.nick';
const NICK_MAX = 32;

function storedNick(): string {
  try {
    return localStorage.getItem(NICK_KEY) || '';
  } catch {
    return '';
  }
}

function storeNick(nick: string): void {
  try {
    localStorage.setItem(NICK_KEY, nick);
  } catch {
    // private mode: remembered for this page only
  }
}

export function guestNick(): string {
  return `guest-${String(Math.floor(1000 + Math.random() * 9000))}`;
}

// A nick the room can take: trimmed, 1..32 characters, no control
// characters, no '/' or '@' (they would read as JID parts).
export function validNick(nick: string): string | null {
  const n = nick.trim();
  if (!n) return 'Pick a name.';
  if ([...n].length > NICK_MAX) return `Names are at most ${NICK_MAX} characters.`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f/@]/.test(n)) return 'Names cannot contain "/", "@" or control characters.';
  return null;
}

function clock(ts: number): string {
  const d = new Date(ts);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

function ModMenu({
  label,
  items,
}: {
  label: string;
  items: { label: string; danger?: boolean; run: () => Promise<void> }[];
}) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const close = (e: Event) => {
      if (ref.current && !ref.current.contains(e.target as Node)) setOpen(false);
    };
    const esc = (e: KeyboardEvent) => e.key === 'Escape' && setOpen(false);
    document.addEventListener('pointerdown', close);
    document.addEventListener('keydown', esc);
    return () => {
      document.removeEventListener('pointerdown', close);
      document.removeEventListener('keydown', esc);
    };
  }, [open]);
  return (
    <div class="chat-mod" ref={ref}>
      <button type="button" class="chat-mod-toggle" aria-label={label} title={label} aria-expanded={open} onClick={() => setOpen(!open)}>
        ⋯
      </button>
      {open ? (
        <div class="chat-mod-menu" role="menu">
          {items.map((it) => (
            <button
              key={it.label}
              type="button"
              role="menuitem"
              class={it.danger ? 'danger' : ''}
              disabled={busy}
              onClick={() => {
                setBusy(true);
                void it.run().finally(() => {
                  setBusy(false);
                  setOpen(false);
                });
              }}
            >
              {it.label}
            </button>
          ))}
        </div>
      ) : null}
    </div>
  );
}

// How often the panel asks the server how many are in the room, where the
// page around it does not tell it (the pop-out).
const OCCUPANTS_POLL_MS = 20000;

// The head's count: the room's own count (the server stops sending ordinary
// occupants' presence past 100 people, so the client's list is short in big
// rooms), or the presence list when that is larger (someone just joined).
export function occupantCount(server: number | undefined, presence: number | undefined): number {
  const s = typeof server === 'number' && server >= 0 ? server : -1;
  const p = typeof presence === 'number' ? presence : -1;
  return Math.max(s, p, 0);
}

export function ChatPanel({ slug, mode, chatters }: { slug: string; mode: ChatMode; chatters?: number }) {
  const { me } = useSession();
  const [info, setInfo] = useState<ChatInfo | null>(null);
  const [loadError, setLoadError] = useState('');
  const [, setTick] = useState(0);
  const [client, setClient] = useState<ChatClient | null>(null);
  const [draft, setDraft] = useState('');
  const [nickDraft, setNickDraft] = useState('');
  const [nickChosen, setNickChosen] = useState(() => Boolean(storedNick()));
  const [nickError, setNickError] = useState('');
  const [showPeople, setShowPeople] = useState(false);
  const [actionError, setActionError] = useState('');
  const [roomCount, setRoomCount] = useState<number | undefined>(undefined);
  const list = useRef<HTMLOListElement>(null);
  const stick = useRef(true);
  const refusals = useRef(0);
  const readOnly = mode === 'overlay';
  const invite = new URL(location.href).searchParams.get('invite');

  // Where the room is (and whether there is chat at all).
  useEffect(() => {
    let alive = true;
    let timer = 0;
    const load = async () => {
      try {
        const i = await get<ChatInfo>(`/channels/${enc(slug)}/chat${invite ? `?invite=${enc(invite)}` : ''}`);
        if (!alive) return;
        setInfo(i);
        setLoadError('');
      } catch (e) {
        if (!alive) return;
        if (e instanceof ApiError && e.status === 404) {
          setLoadError('There is no chat here.');
          return;
        }
        if (e instanceof ApiError && e.status < 500) {
          setLoadError(`No chat: ${errorText(e)}`);
          return;
        }
        setLoadError(`Chat is not available: ${errorText(e)}`);
        timer = window.setTimeout(load, 10000);
      }
    };
    void load();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [slug]);

  // The room's occupant count: from the page (the channel's "chatters", which
  // it polls anyway) or, alone in a pop-out, from GET .../chat now and then.
  // Only the count is taken: a new info object would restart the client.
  useEffect(() => {
    if (typeof chatters === 'number') {
      setRoomCount(chatters);
      return;
    }
    if (readOnly || !info || !info.enabled) return;
    setRoomCount(info.occupants);
    let alive = true;
    const t = window.setInterval(() => {
      get<ChatInfo>(`/channels/${enc(slug)}/chat${invite ? `?invite=${enc(invite)}` : ''}`).then(
        (i) => alive && setRoomCount(i.occupants),
        () => undefined,
      );
    }, OCCUPANTS_POLL_MS);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, [slug, info, chatters, readOnly]);

  // One client per (room, account).
  useEffect(() => {
    if (!info || !info.enabled || me === undefined) return;
    let c: ChatClient | null = null;
    let cancelled = false;
    const account = me;
    void import('./client').then(({ ChatClient }) => {
      if (cancelled) return;
      const nick = account ? account.name : storedNick() || guestNick();
      c = new ChatClient({
        info,
        nick,
        credentials: async (): Promise<Credentials> => {
          if (!account) return { anonymous: true };
          const t = await post<{ jid: string; token: string }>('/chat/token', {});
          return { anonymous: false, jid: t.jid, token: t.token };
        },
        onChange: () => setTick((n) => n + 1),
        onNickRefused: (reason) => {
          if (!c || ++refusals.current > 3) return;
          if (account) {
            // the name is taken in the room (another of this account's
            // windows, where the room allows one session per nick)
            c.setNick(`${account.name}~${refusals.current + 1}`);
            return;
          }
          setNickError(reason);
          setNickChosen(false);
          c.setNick(guestNick());
        },
      });
      setClient(c);
      c.start();
    }, (e) => {
      if (!cancelled) setLoadError(`Chat could not load: ${errorText(e)}`);
    });
    return () => {
      cancelled = true;
      c?.stop();
      setClient(null);
    };
    // me: undefined while asking, null for a guest
  }, [info, me === undefined ? 'asking' : me?.id ?? 'guest']);

  // Follow the newest message unless the reader scrolled up.
  const count = client?.messages.length ?? 0;
  const lastKey = client?.messages[count - 1]?.key;
  useEffect(() => {
    const el = list.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [count, lastKey]);

  const rank = (o: Occupant) => (o.role === 'moderator' ? 0 : o.role === 'participant' ? 1 : 2);
  const people = client
    ? [...client.occupants.values()].sort((a, b) => rank(a) - rank(b) || a.nick.localeCompare(b.nick))
    : [];

  const act = (what: string, p: Promise<void>) =>
    p.then(
      () => setActionError(''),
      (e) => setActionError(`${what}: ${errorText(e)}`),
    );

  if (loadError) {
    return (
      <div class={`chat-panel chat-${mode}`} data-status="unavailable">
        <p class="chat-info muted">{loadError}</p>
      </div>
    );
  }
  if (info && !info.enabled) {
    return (
      <div class={`chat-panel chat-${mode}`} data-status="off">
        <p class="chat-info muted">Chat is off for this channel.</p>
      </div>
    );
  }

  const c = client;
  const status = c?.status ?? 'idle';
  const isGuest = me === null;
  const mayTalk = !readOnly && c?.canTalk && !(isGuest && info && !info.guests_may_talk);
  const moderator = !readOnly && Boolean(c?.canModerate);

  const messageMenu = (m: ChatMessage) => {
    if (!c) return [];
    const o = c.occupantFor(m);
    const items: { label: string; danger?: boolean; run: () => Promise<void> }[] = [];
    if (m.id) items.push({ label: 'Delete message', danger: true, run: () => act('Delete', c.deleteMessage(m)) });
    if (o && o.nick !== c.nick) items.push(...occupantItems(o));
    return items;
  };
  const occupantItems = (o: Occupant) => {
    if (!c) return [];
    const items: { label: string; danger?: boolean; run: () => Promise<void> }[] = [
      { label: `Kick ${o.nick}`, run: () => act('Kick', c.kick(o.nick)) },
    ];
    if (o.role === 'visitor') items.push({ label: `Unmute ${o.nick}`, run: () => act('Unmute', c.mute(o.nick, false)) });
    else items.push({ label: `Mute ${o.nick}`, run: () => act('Mute', c.mute(o.nick, true)) });
    items.push({ label: `Ban ${o.nick}`, danger: true, run: () => act('Ban', c.ban(o)) });
    return items;
  };

  const submit = (e: Event) => {
    e.preventDefault();
    if (!c) return;
    if (c.send(draft)) setDraft('');
  };

  const chooseNick = (e: Event) => {
    e.preventDefault();
    if (!c) return;
    const nick = nickDraft.trim() || c.nick;
    const bad = validNick(nick);
    if (bad) {
      setNickError(bad);
      return;
    }
    setNickError('');
    storeNick(nick);
    setNickChosen(true);
    refusals.current = 0;
    if (nick !== c.nick || c.status !== 'joined') c.setNick(nick);
  };

  const statusText =
    status === 'joined'
      ? ''
      : status === 'connecting' || status === 'idle'
        ? 'Connecting to chat…'
        : status === 'joining'
          ? 'Joining…'
          : status === 'waiting'
            ? c?.notice || 'Reconnecting…'
            : '';

  return (
    <div
      class={`chat-panel chat-${mode}`}
      data-status={status}
      data-nick={c?.nick || ''}
      data-role={c?.role || ''}
      data-history={c?.historyLoaded ? 'loaded' : ''}
    >
      {readOnly ? null : (
        <div class="chat-head">
          <strong>Chat</strong>
          <button
            type="button"
            class="linkish chat-people-toggle"
            aria-expanded={showPeople}
            onClick={() => setShowPeople(!showPeople)}
            title="People in the chat"
          >
            <span id="chat-occupants">{occupantCount(roomCount ?? info?.occupants, c?.occupants.size)}</span> here
          </button>
          {mode === 'page' ? (
            <a class="chat-popout-link" href={`/c/${enc(slug)}/chat`} target="_blank" rel="noopener">
              Pop out
            </a>
          ) : null}
        </div>
      )}
      {!readOnly && c?.subject ? <p class="chat-subject">{c.subject}</p> : null}
      {showPeople && !readOnly ? (
        <ul class="chat-people" aria-label="People in the chat">
          {people.map((o) => (
            <li key={o.nick} class="chat-person" data-nick={o.nick} data-role={o.role}>
              <span class="chat-person-nick">{o.nick}</span>
              {o.role === 'moderator' ? <span class="chat-role">mod</span> : null}
              {o.role === 'visitor' ? <span class="chat-role">muted</span> : null}
              {moderator && o.nick !== c?.nick ? <ModMenu label={`Moderate ${o.nick}`} items={occupantItems(o)} /> : null}
            </li>
          ))}
          {(roomCount ?? 0) > people.length ? (
            <li class="chat-person chat-more muted">
              and {(roomCount ?? 0) - people.length} more (in a big room the list shows only some)
            </li>
          ) : null}
        </ul>
      ) : null}
      <ol
        class="chat-messages"
        ref={list}
        aria-live="polite"
        aria-label="Chat messages"
        onScroll={(e) => {
          const el = e.currentTarget as HTMLOListElement;
          stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 40;
        }}
      >
        {(c?.messages ?? []).map((m) => (
          <li key={m.key} class={`chat-msg${m.mine ? ' mine' : ''}`} data-id={m.id || ''} data-nick={m.nick}>
            {readOnly ? null : (
              <time class="chat-time" dateTime={new Date(m.ts).toISOString()} title={new Date(m.ts).toLocaleString()}>
                {clock(m.ts)}
              </time>
            )}
            <span class="chat-nick">{m.nick}</span>
            <span class="chat-text">{m.text}</span>
            {moderator ? (
              <ModMenu label={`Moderate message from ${m.nick}`} items={messageMenu(m)} />
            ) : m.mine && m.id && !readOnly && c?.status === 'joined' ? (
              <ModMenu
                label="Your message"
                items={[
                  {
                    label: 'Delete my message',
                    danger: true,
                    run: async () => {
                      c.retract(m);
                    },
                  },
                ]}
              />
            ) : null}
          </li>
        ))}
      </ol>
      {readOnly ? null : (
        <div class="chat-foot">
          {statusText ? <p class="chat-status muted">{statusText}</p> : null}
          {c?.notice && status !== 'waiting' ? <p class="chat-notice muted">{c.notice}</p> : null}
          {c?.error ? (
            <p class="chat-error error" role="alert">
              {c.error}
            </p>
          ) : null}
          {actionError ? (
            <p class="chat-error error" role="alert">
              {actionError}
            </p>
          ) : null}
          {status === 'closed' ? (
            <button type="button" onClick={() => c?.start()}>
              Join again
            </button>
          ) : null}
          {c && status === 'joined' && c.role === 'visitor' && !(isGuest && info && !info.guests_may_talk) ? (
            <p class="chat-muted muted">You are muted in this chat.</p>
          ) : null}
          {isGuest && info && !info.guests_may_talk ? (
            <p class="chat-login muted">
              <a href={`/login?next=${enc(location.pathname)}`}>Log in</a> to chat.
            </p>
          ) : isGuest && c && !nickChosen ? (
            <form class="chat-nick-form" onSubmit={chooseNick}>
              <label for="chat-nick">Your name in chat</label>
              <div class="chat-row">
                <input
                  id="chat-nick"
                  value={nickDraft}
                  maxLength={NICK_MAX}
                  placeholder={c.nick}
                  autoComplete="nickname"
                  onInput={(e) => setNickDraft((e.target as HTMLInputElement).value)}
                />
                <button type="submit" class="primary">
                  Join chat
                </button>
              </div>
              <small class="muted">Leave it empty to chat as {c.nick}.</small>
              {nickError ? <small class="error">{nickError}</small> : null}
            </form>
          ) : mayTalk ? (
            <form class="chat-compose" onSubmit={submit}>
              <label class="visually-hidden" for="chat-input">
                Message
              </label>
              <div class="chat-row">
                <input
                  id="chat-input"
                  value={draft}
                  maxLength={info?.max_message_length || 500}
                  placeholder={`Message as ${c?.nick}`}
                  autoComplete="off"
                  onInput={(e) => setDraft((e.target as HTMLInputElement).value)}
                />
                <button type="submit" class="primary" disabled={!draft.trim()}>
                  Send
                </button>
              </div>
              <small class="muted">
                {isGuest ? (
                  <>
                    As guest {c?.nick} ·{' '}
                    <button type="button" class="linkish" onClick={() => {
                      setNickDraft('');
                      setNickChosen(false);
                    }}>
                      change name
                    </button>
                  </>
                ) : null}
                {info?.slow_mode ? ` Slow mode: one message every ${info.slow_mode} s.` : null}
              </small>
            </form>
          ) : null}
        </div>
      )}
    </div>
  );
}
