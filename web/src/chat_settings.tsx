// The chat part of a channel's settings page, for its owner (and admins):
// whether guests may talk, slow mode, the room's subject, the chat
// moderators, banned words, and the bans in force with a "Lift" button each
// (and a small form to ban someone by account name or XMPP address).
//
// Everything here is a REST call (src/app/api_chat.c and PATCH
// /channels/:slug); the server tells the live room at once, so nothing needs
// reloading in the chat itself. Plain forms, labelled fields and buttons:
// all of it works from the keyboard, and results are announced through
// role="status" / role="alert".
import { useEffect, useState } from 'preact/hooks';

import { api, del, enc, errorText, get, patch, post, type Channel } from './api';
import { ErrorBox } from './app';

const SLOW_MODE_MAX = 3600;
const SUBJECT_MAX = 200;
const WORDS_MAX = 500;
const WORD_MAX = 100;

interface ChatChannel extends Channel {
  chat_guests_may_talk?: boolean;
  chat_slow_mode?: number;
  chat_subject?: string | null;
  chatters?: number;
}

interface ChatInfo {
  enabled: boolean;
  room: string;
  occupants: number;
  can_moderate: boolean;
}

interface Moderator {
  user: string;
  jid: string;
  added_at: number;
}

interface Ban {
  id: number;
  user?: string | null;
  jid?: string | null;
  nick?: string | null;
  reason?: string | null;
  banned_by?: string | null;
  guest?: boolean;
  created_at: number;
  expires_at?: number | null;
}

const DURATIONS: [string, number | null][] = [
  ['until lifted', null],
  ['10 minutes', 600],
  ['1 hour', 3600],
  ['1 day', 86400],
  ['1 week', 7 * 86400],
];

function Status({ text }: { text: string }) {
  return text ? (
    <p class="ok" role="status">
      {text}
    </p>
  ) : null;
}

function when(ts: number): string {
  return new Date(ts * 1000).toLocaleString();
}

// Characters as the server counts them (code points, not UTF-16 units).
const chars = (s: string) => Array.from(s).length;

/** Run an API call with error and status reporting. */
function useAction() {
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const [busy, setBusy] = useState(false);
  const run = async (what: () => Promise<unknown>, done: string) => {
    setError('');
    setStatus('');
    setBusy(true);
    try {
      await what();
      setStatus(done);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return { error, status, busy, run, setError };
}

export function ChatSettings({ slug }: { slug: string }) {
  const [info, setInfo] = useState<ChatInfo | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    get<ChatInfo>(`/channels/${enc(slug)}/chat`).then(setInfo, (e) => setError(errorText(e)));
  }, [slug]);
  if (!info) return error ? <ErrorBox error={error} /> : <p class="muted">Loading chat settings…</p>;
  return (
    <div class="chat-settings">
      <h2>Chat</h2>
      <p class="muted">
        The room is <code>{info.room}</code>
        {info.enabled ? `; ${info.occupants} in it now.` : '; chat is off for this channel (turn it on above).'} XMPP
        apps can join it at that address.
      </p>
      <RoomSettings slug={slug} />
      <Moderators slug={slug} />
      <BannedWords slug={slug} />
      <Bans slug={slug} />
    </div>
  );
}

// --- guests, slow mode, subject -----------------------------------------------------

function RoomSettings({ slug }: { slug: string }) {
  const [form, setForm] = useState<{ guests: boolean; slow: string; subject: string } | null>(null);
  const a = useAction();
  const load = (c: ChatChannel) =>
    setForm({
      guests: c.chat_guests_may_talk !== false,
      slow: String(c.chat_slow_mode ?? 0),
      subject: c.chat_subject || '',
    });
  useEffect(() => {
    get<ChatChannel>(`/channels/${enc(slug)}`).then(load, (e) => a.setError(errorText(e)));
  }, [slug]);
  if (!form) return <ErrorBox error={a.error} />;
  const slow = Number(form.slow);
  const slowOk = /^\d+$/.test(form.slow) && slow >= 0 && slow <= SLOW_MODE_MAX;
  const save = (e: Event) => {
    e.preventDefault();
    if (!slowOk) {
      a.setError(`Slow mode is a number of seconds from 0 (off) to ${SLOW_MODE_MAX}.`);
      return;
    }
    if (chars(form.subject) > SUBJECT_MAX) {
      a.setError(`The subject is at most ${SUBJECT_MAX} characters.`);
      return;
    }
    void a.run(async () => {
      load(
        await patch<ChatChannel>(`/channels/${enc(slug)}`, {
          chat_guests_may_talk: form.guests,
          chat_slow_mode: slow,
          chat_subject: form.subject.trim() || null,
        }),
      );
    }, 'Chat settings saved.');
  };
  return (
    <form onSubmit={save} aria-labelledby="chat-room-h">
      <h3 id="chat-room-h">Room</h3>
      <div class="check">
        <input
          id="chat-guests"
          type="checkbox"
          checked={form.guests}
          onChange={(e) => setForm({ ...form, guests: (e.target as HTMLInputElement).checked })}
        />
        <label for="chat-guests">Guests (viewers without an account) may talk; off: they only read</label>
      </div>
      <div class="field">
        <label for="chat-slow">Slow mode: seconds between one person's messages (0 = off)</label>
        <input
          id="chat-slow"
          type="number"
          min={0}
          max={SLOW_MODE_MAX}
          step={1}
          inputMode="numeric"
          value={form.slow}
          aria-invalid={slowOk ? undefined : 'true'}
          onInput={(e) => setForm({ ...form, slow: (e.target as HTMLInputElement).value })}
        />
      </div>
      <div class="field">
        <label for="chat-subject">Subject (plain text; empty: the channel's title)</label>
        <input
          id="chat-subject"
          type="text"
          maxLength={SUBJECT_MAX * 2}
          value={form.subject}
          onInput={(e) => setForm({ ...form, subject: (e.target as HTMLInputElement).value })}
        />
      </div>
      <ErrorBox error={a.error} />
      <Status text={a.status} />
      <button class="primary" type="submit" disabled={a.busy}>
        Save chat settings
      </button>
    </form>
  );
}

// --- moderators ------------------------------------------------------------------------

function Moderators({ slug }: { slug: string }) {
  const [list, setList] = useState<Moderator[] | null>(null);
  const [name, setName] = useState('');
  const a = useAction();
  const reload = async () => setList((await get<{ moderators: Moderator[] }>(`/channels/${enc(slug)}/moderators`)).moderators);
  useEffect(() => {
    reload().catch((e) => a.setError(errorText(e)));
  }, [slug]);
  const add = (e: Event) => {
    e.preventDefault();
    const who = name.trim();
    if (!who) return;
    void a.run(async () => {
      await post(`/channels/${enc(slug)}/moderators`, { user: who });
      setName('');
      await reload();
    }, `${who} is now a moderator.`);
  };
  const remove = (who: string) =>
    void a.run(async () => {
      await del(`/channels/${enc(slug)}/moderators/${enc(who)}`);
      await reload();
    }, `${who} is no longer a moderator.`);
  return (
    <section aria-labelledby="chat-mods-h">
      <h3 id="chat-mods-h">Moderators</h3>
      <p class="muted">
        Moderators may remove messages, kick and ban people in the room (from the web page or an XMPP app) and edit
        the banned words. You and the site's admins always moderate.
      </p>
      {list === null ? null : list.length === 0 ? (
        <p class="muted">No moderators yet.</p>
      ) : (
        <ul class="chat-moderators">
          {list.map((m) => (
            <li key={m.user}>
              <span>{m.user}</span>{' '}
              <button type="button" onClick={() => remove(m.user)} aria-label={`Remove ${m.user} as moderator`} disabled={a.busy}>
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      <form onSubmit={add} aria-label="Add a moderator">
        <label for="chat-mod-add">User name</label>
        <input id="chat-mod-add" type="text" value={name} autoComplete="off" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={a.busy || !name.trim()}>
          Add moderator
        </button>
      </form>
      <ErrorBox error={a.error} />
      <Status text={a.status} />
    </section>
  );
}

// --- banned words ----------------------------------------------------------------------

function BannedWords({ slug }: { slug: string }) {
  const [text, setText] = useState<string | null>(null);
  const a = useAction();
  const url = `/channels/${enc(slug)}/banned-words`;
  useEffect(() => {
    get<{ words: string[] }>(url).then((d) => setText(d.words.join('\n')), (e) => a.setError(errorText(e)));
  }, [slug]);
  if (text === null) return <ErrorBox error={a.error} />;
  const words = text
    .split('\n')
    .map((w) => w.trim())
    .filter((w) => w);
  const save = (e: Event) => {
    e.preventDefault();
    if (words.length > WORDS_MAX) {
      a.setError(`At most ${WORDS_MAX} words (there are ${words.length}).`);
      return;
    }
    const long = words.find((w) => chars(w) > WORD_MAX);
    if (long) {
      a.setError(`A word is at most ${WORD_MAX} characters: “${long.slice(0, 20)}…” is longer.`);
      return;
    }
    void a.run(async () => {
      const d = await api<{ words: string[] }>('PUT', url, { words });
      setText(d.words.join('\n'));
    }, 'Banned words saved.');
  };
  return (
    <form onSubmit={save} aria-labelledby="chat-words-h">
      <h3 id="chat-words-h">Banned words</h3>
      <div class="field">
        <label for="chat-words">
          One word or phrase a line; messages that contain one are refused (any case). {words.length} of {WORDS_MAX}.
        </label>
        <textarea id="chat-words" rows={5} value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
      </div>
      <ErrorBox error={a.error} />
      <Status text={a.status} />
      <button type="submit" disabled={a.busy}>
        Save banned words
      </button>
    </form>
  );
}

// --- bans ---------------------------------------------------------------------------------

function Bans({ slug }: { slug: string }) {
  const [list, setList] = useState<Ban[] | null>(null);
  const [who, setWho] = useState('');
  const [reason, setReason] = useState('');
  const [duration, setDuration] = useState(0);
  const a = useAction();
  const url = `/channels/${enc(slug)}/bans`;
  const reload = async () => setList((await get<{ bans: Ban[] }>(url)).bans);
  useEffect(() => {
    reload().catch((e) => a.setError(errorText(e)));
  }, [slug]);
  const label = (b: Ban) => b.user || b.jid || (b.guest ? `guest ${b.nick || ''}`.trim() : b.nick) || `ban ${b.id}`;
  const lift = (b: Ban) =>
    void a.run(async () => {
      await del(`${url}/${b.id}`);
      await reload();
    }, `The ban on ${label(b)} is lifted.`);
  const ban = (e: Event) => {
    e.preventDefault();
    const target = who.trim();
    if (!target) return;
    const body: Record<string, unknown> = target.includes('@') ? { jid: target } : { user: target };
    if (reason.trim()) body.reason = reason.trim();
    const secs = DURATIONS[duration][1];
    if (secs) body.duration = secs;
    void a.run(async () => {
      await post(url, body);
      setWho('');
      setReason('');
      await reload();
    }, `${target} is banned.`);
  };
  return (
    <section aria-labelledby="chat-bans-h">
      <h3 id="chat-bans-h">Bans</h3>
      {list === null ? null : list.length === 0 ? (
        <p class="muted">Nobody is banned.</p>
      ) : (
        <table class="chat-bans">
          <thead>
            <tr>
              <th scope="col">Who</th>
              <th scope="col">Reason</th>
              <th scope="col">By</th>
              <th scope="col">Until</th>
              <th scope="col">
                <span class="visually-hidden">Action</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.map((b) => (
              <tr key={b.id}>
                <td>{label(b)}</td>
                <td>{b.reason || ''}</td>
                <td>{b.banned_by || ''}</td>
                <td>{b.expires_at ? when(b.expires_at) : 'until lifted'}</td>
                <td>
                  <button type="button" onClick={() => lift(b)} aria-label={`Lift the ban on ${label(b)}`} disabled={a.busy}>
                    Lift
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={ban} aria-label="Ban someone">
        <div class="field">
          <label for="chat-ban-who">User name, or XMPP address (name@server)</label>
          <input id="chat-ban-who" type="text" autoComplete="off" value={who} onInput={(e) => setWho((e.target as HTMLInputElement).value)} />
        </div>
        <div class="field">
          <label for="chat-ban-reason">Reason (optional, shown to them)</label>
          <input
            id="chat-ban-reason"
            type="text"
            maxLength={400}
            value={reason}
            onInput={(e) => setReason((e.target as HTMLInputElement).value)}
          />
        </div>
        <div class="field">
          <label for="chat-ban-for">For</label>
          <select id="chat-ban-for" value={String(duration)} onChange={(e) => setDuration(Number((e.target as HTMLSelectElement).value))}>
            {DURATIONS.map(([text], i) => (
              <option key={text} value={String(i)}>
                {text}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" class="danger" disabled={a.busy || !who.trim()}>
          Ban
        </button>
      </form>
      <ErrorBox error={a.error} />
      <Status text={a.status} />
    </section>
  );
}
