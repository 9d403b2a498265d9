// Settings: profile (e-mail, password, two-factor login, account deletion),
// channels (list, create, edit, avatar and banner, stream key with copy and
// regenerate next to the OBS settings, invite code and invited users for
// protected channels, chat settings), API keys (create, list, revoke; a new
// key is shown once), notifications (per followed channel e-mail on/off, and
// the in-app list), and for admins, topics (list, add, rename, delete).
//
// Secrets the server shows once (a new invite code, an API key, a TOTP
// secret) live only in this page's state: reloading the page forgets them.
import { useEffect, useState } from 'preact/hooks';

import {
  api, ApiError, del, enc, errorText, get, patch, post,
  type ApiKey, type Channel, type Notification, type Topic, type User,
} from './api';
import { ErrorBox, Field, navigate, RequireLogin, useSession, useTitle } from './app';
import { ChatSettings } from './chat_settings';

const TABS: [string, string][] = [
  ['/settings', 'Profile'],
  ['/settings/channels', 'Channels'],
  ['/settings/api-keys', 'API keys'],
  ['/settings/notifications', 'Notifications'],
];
// Tabs only admins see (GET /me lists the account's roles).
const ADMIN_TABS: [string, string][] = [['/settings/topics', 'Topics']];

function isAdmin(me: User | null | undefined): boolean {
  return Boolean(me && me.roles && me.roles.includes('admin'));
}

export function SettingsPage({ path }: { path: string }) {
  const { me } = useSession();
  const m = /^\/settings\/channels\/([^/]+)$/.exec(path);
  let body;
  if (m) body = <ChannelEdit slug={decodeURIComponent(m[1])} />;
  else if (path === '/settings/channels') body = <ChannelsTab />;
  else if (path === '/settings/api-keys') body = <ApiKeysTab />;
  else if (path === '/settings/notifications') body = <NotificationsTab />;
  else if (path === '/settings/topics') body = <TopicsTab />;
  else body = <ProfileTab />;
  const active = m ? '/settings/channels' : path.replace(/\/$/, '');
  const tabs = isAdmin(me) ? [...TABS, ...ADMIN_TABS] : TABS;
  return (
    <RequireLogin>
      <h1>Settings</h1>
      <nav class="tabs" aria-label="Settings">
        {tabs.map(([href, label]) => (
          <a key={href} href={href} aria-current={active === href ? 'page' : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {body}
    </RequireLogin>
  );
}

function Status({ text }: { text: string }) {
  return text ? (
    <p class="ok" role="status">
      {text}
    </p>
  ) : null;
}

// --- profile -----------------------------------------------------------------------

function ProfileTab() {
  useTitle('Settings');
  const { me, refresh, signOut } = useSession();
  const [email, setEmail] = useState(me?.email || '');
  const [password, setPassword] = useState('');
  const [current, setCurrent] = useState('');
  const [status, setStatus] = useState('');
  const [error, setError] = useState('');
  const [delPw, setDelPw] = useState('');
  const save = async (e: Event) => {
    e.preventDefault();
    setError('');
    setStatus('');
    try {
      const body: Record<string, string> = { current_password: current };
      if (email !== (me?.email || '')) body.email = email;
      if (password) body.password = password;
      await patch<{ user: User }>('/me', body);
      setPassword('');
      setCurrent('');
      setStatus('Saved.');
      await refresh();
    } catch (err) {
      setError(errorText(err));
    }
  };
  const remove = async (e: Event) => {
    e.preventDefault();
    if (!confirm('Delete your account and all its channels? This cannot be undone.')) return;
    try {
      await del('/me', { password: delPw });
      await signOut().catch(() => undefined);
      navigate('/');
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <>
      <form class="card-form" onSubmit={save}>
        <h2>Profile</h2>
        <p>
          Signed in as <strong>{me?.name}</strong> ({me?.roles.join(', ')})
        </p>
        <Field id="p-email" label="E-mail" type="email" value={email} onInput={setEmail} autocomplete="email" />
        <Field
          id="p-password"
          label="New password (leave empty to keep)"
          type="password"
          value={password}
          onInput={setPassword}
          autocomplete="new-password"
        />
        <Field
          id="p-current"
          label="Current password"
          type="password"
          value={current}
          onInput={setCurrent}
          required
          autocomplete="current-password"
        />
        <ErrorBox error={error} />
        <Status text={status} />
        <button class="primary" type="submit">
          Save
        </button>
      </form>
      <TotpSection />
      <form class="card-form danger" onSubmit={remove}>
        <h2>Delete account</h2>
        <p class="muted">Your channels and your follows go with it.</p>
        <Field
          id="d-password"
          label="Password"
          type="password"
          value={delPw}
          onInput={setDelPw}
          required
          autocomplete="current-password"
        />
        <button type="submit" class="danger">
          Delete my account
        </button>
      </form>
    </>
  );
}

// --- two-factor login (TOTP) ---------------------------------------------------------

type Me = User & { totp_enabled?: boolean; verified?: boolean };

// The Base32 secret in groups of four, easier to type into an app by hand.
function grouped(secret: string): string {
  return secret.replace(/(.{4})/g, '$1 ').trim();
}

function TotpSection() {
  const { me, refresh } = useSession();
  const enabled = Boolean((me as Me | null | undefined)?.totp_enabled);
  const [setup, setSetup] = useState<{ secret: string; uri: string } | null>(null);
  const [code, setCode] = useState('');
  const [offCode, setOffCode] = useState('');
  const [offPassword, setOffPassword] = useState('');
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const act = async (what: () => Promise<unknown>, done: string) => {
    setError('');
    setStatus('');
    try {
      await what();
      setStatus(done);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const begin = () =>
    void act(async () => {
      setSetup(await post<{ secret: string; uri: string }>('/me/totp'));
      setCode('');
      window.setTimeout(() => document.getElementById('totp-code')?.focus(), 0);
    }, '');
  const confirmCode = (e: Event) => {
    e.preventDefault();
    void act(async () => {
      await post('/me/totp/confirm', { code: code.replace(/\s+/g, '') });
      setSetup(null);
      setCode('');
      await refresh();
    }, 'Two-factor login is on. From now on, logging in asks for a code from your app.');
  };
  const turnOff = (e: Event) => {
    e.preventDefault();
    void act(async () => {
      await del('/me/totp', offCode ? { code: offCode.replace(/\s+/g, '') } : { password: offPassword });
      setOffCode('');
      setOffPassword('');
      await refresh();
    }, 'Two-factor login is off.');
  };
  return (
    <section class="card-form" id="totp" aria-labelledby="totp-h">
      <h2 id="totp-h">Two-factor login</h2>
      {enabled ? (
        <form onSubmit={turnOff}>
          <p>
            <span class="badge on">on</span> Logging in asks for a code from your authenticator app.
          </p>
          <p class="muted">To turn it off, give a current code, or your password if you lost the device.</p>
          <Field
            id="totp-off-code"
            label="Code from your app"
            value={offCode}
            onInput={setOffCode}
            autocomplete="one-time-code"
            inputMode="numeric"
            maxLength={8}
          />
          <Field
            id="totp-off-password"
            label="Or your password"
            type="password"
            value={offPassword}
            onInput={setOffPassword}
            autocomplete="current-password"
          />
          <ErrorBox error={error} />
          <Status text={status} />
          <button type="submit" class="danger" disabled={!offCode && !offPassword}>
            Turn off two-factor login
          </button>
        </form>
      ) : setup ? (
        <form onSubmit={confirmCode}>
          <p>
            Add this account to an authenticator app (andOTP, Aegis, FreeOTP, Google Authenticator…): open the link on
            the phone that has the app, or type the key in by hand. Then enter the 6-digit code the app shows.
          </p>
          <CopyField id="totp-secret" label="Key (Base32, time-based, 6 digits, 30 s)" value={grouped(setup.secret)} />
          <div class="field">
            <span id="totp-uri-label">Setup link</span>
            <a id="totp-uri" class="break" href={setup.uri} aria-labelledby="totp-uri-label">
              {setup.uri}
            </a>
          </div>
          <Field
            id="totp-code"
            label="Code from your app"
            value={code}
            onInput={setCode}
            required
            autocomplete="one-time-code"
            inputMode="numeric"
            maxLength={8}
          />
          <ErrorBox error={error} />
          <div class="inline">
            <button class="primary" type="submit">
              Turn on
            </button>
            <button type="button" onClick={() => (setSetup(null), setError(''))}>
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <>
          <p class="muted">
            Off. With it on, logging in needs your password and a code from an authenticator app on your phone.
          </p>
          <ErrorBox error={error} />
          <Status text={status} />
          <button type="button" id="totp-begin" onClick={begin}>
            Set up two-factor login
          </button>
        </>
      )}
    </section>
  );
}

// --- channels ------------------------------------------------------------------------

function useTopics(): Topic[] {
  const [topics, setTopics] = useState<Topic[]>([]);
  useEffect(() => {
    get<{ topics: Topic[] }>('/topics').then((r) => setTopics(r.topics), () => undefined);
  }, []);
  return topics;
}

function TopicSelect({ id, value, onChange, topics }: { id: string; value: string; onChange: (v: string) => void; topics: Topic[] }) {
  return (
    <div class="field">
      <label for={id}>Topic</label>
      <select id={id} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        <option value="">None</option>
        {topics.map((t) => (
          <option key={t.slug} value={t.name}>
            {t.name}
          </option>
        ))}
      </select>
    </div>
  );
}

function ChannelsTab() {
  useTitle('My channels');
  const { me } = useSession();
  const topics = useTopics();
  const [channels, setChannels] = useState<Channel[] | null>(null);
  const [title, setTitle] = useState('');
  const [slug, setSlug] = useState('');
  const [topic, setTopic] = useState('');
  const [error, setError] = useState('');
  useEffect(() => {
    if (!me) return;
    get<{ channels: Channel[] }>(`/channels?owner=${enc(me.name)}&limit=100`).then(
      (r) => setChannels(r.channels),
      (e) => setError(errorText(e)),
    );
  }, [me?.name]);
  const create = async (e: Event) => {
    e.preventDefault();
    setError('');
    try {
      const c = await post<Channel>('/channels', { title, ...(slug ? { slug } : {}), ...(topic ? { topic } : {}) });
      navigate(`/settings/channels/${enc(c.slug)}`);
    } catch (err) {
      setError(errorText(err));
    }
  };
  const canStream = me && (me.roles.includes('streamer') || me.roles.includes('admin'));
  return (
    <>
      <h2>Your channels</h2>
      {channels === null ? (
        <p class="muted">Loading…</p>
      ) : channels.length === 0 ? (
        <p class="muted">You have no channels yet.</p>
      ) : (
        <ul class="rows" id="my-channels">
          {channels.map((c) => (
            <li class="row" key={c.slug}>
              <div>
                <a class="card-title" href={`/settings/channels/${enc(c.slug)}`}>
                  {c.title}
                </a>{' '}
                {c.live ? <span class="badge live">live</span> : null}
                <div class="muted">/c/{c.slug}</div>
              </div>
              <a href={`/c/${enc(c.slug)}`}>View</a>
            </li>
          ))}
        </ul>
      )}
      {canStream ? (
        <form class="card-form" onSubmit={create} id="create-channel">
          <h2>Open a channel</h2>
          <Field id="c-title" label="Title" value={title} onInput={setTitle} required maxLength={140} />
          <Field
            id="c-slug"
            label="Address (optional)"
            value={slug}
            onInput={setSlug}
            hint="Lowercase letters, digits and dashes: /c/<address>. Made from the title when empty."
            maxLength={48}
          />
          <TopicSelect id="c-topic" value={topic} onChange={setTopic} topics={topics} />
          <ErrorBox error={error} />
          <button class="primary" type="submit">
            Create channel
          </button>
        </form>
      ) : (
        <p class="muted">Your account may not open channels (it needs the streamer role).</p>
      )}
    </>
  );
}

async function copy(text: string, input?: HTMLInputElement | null): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (!input) return false;
    const type = input.type;
    input.type = 'text';
    input.select();
    const ok = document.execCommand('copy');
    input.type = type;
    return ok;
  }
}

function CopyField({ id, label, value, secret }: { id: string; label: string; value: string; secret?: boolean }) {
  const [shown, setShown] = useState(!secret);
  const [copied, setCopied] = useState('');
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <div class="inline">
        <input id={id} type={shown ? 'text' : 'password'} readOnly value={value} onFocus={(e) => (e.target as HTMLInputElement).select()} />
        {secret ? (
          <button type="button" aria-pressed={shown} onClick={() => setShown(!shown)}>
            {shown ? 'Hide' : 'Show'}
          </button>
        ) : null}
        <button
          type="button"
          onClick={() =>
            void copy(value, document.getElementById(id) as HTMLInputElement).then((ok) =>
              setCopied(ok ? 'Copied' : 'Copy failed'),
            )
          }
        >
          Copy
        </button>
        <span class="muted" role="status">
          {copied}
        </span>
      </div>
    </div>
  );
}

function ChannelEdit({ slug }: { slug: string }) {
  const topics = useTopics();
  const [ch, setCh] = useState<Channel | null>(null);
  const [form, setForm] = useState({ title: '', live_title: '', description: '', topic: '', record: false, chat_enabled: true, protected: false });
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  useTitle(ch ? `Channel: ${ch.title}` : 'Channel');
  const load = (c: Channel) => {
    setCh(c);
    setForm({
      title: c.title,
      live_title: c.live_title || '',
      description: c.description || '',
      topic: c.topic || '',
      record: Boolean(c.record),
      chat_enabled: c.chat_enabled !== false,
      protected: Boolean(c.protected),
    });
  };
  useEffect(() => {
    get<Channel>(`/channels/${enc(slug)}`).then(load, (e) => setError(errorText(e)));
  }, [slug]);
  const set = (k: keyof typeof form) => (v: string | boolean) => setForm({ ...form, [k]: v });
  const run = async (what: () => Promise<unknown>, done: string) => {
    setError('');
    setStatus('');
    try {
      await what();
      setStatus(done);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const save = (e: Event) => {
    e.preventDefault();
    void run(async () => {
      load(
        await patch<Channel>(`/channels/${enc(slug)}`, {
          title: form.title,
          live_title: form.live_title || null,
          description: form.description,
          topic: form.topic || null,
          record: form.record,
          chat_enabled: form.chat_enabled,
          protected: form.protected,
        }),
      );
    }, 'Saved.');
  };
  const regenerate = () => {
    if (!confirm('Make a new stream key? The old one stops working at once.')) return;
    void run(async () => load(await post<Channel>(`/channels/${enc(slug)}/stream-key`)), 'A new stream key is set.');
  };
  const remove = () => {
    if (!confirm(`Delete the channel ${slug}? This cannot be undone.`)) return;
    void run(async () => {
      await del(`/channels/${enc(slug)}`);
      navigate('/settings/channels');
    }, 'Deleted.');
  };
  if (!ch)
    return (
      <>
        <ErrorBox error={error} />
        {error ? null : <p class="muted">Loading…</p>}
      </>
    );
  const server = ch.obs?.server || ch.rtmp_url || '';
  const key = ch.obs?.key || ch.stream_key || '';
  return (
    <>
      <p>
        <a href="/settings/channels">← Your channels</a> · <a href={`/c/${enc(ch.slug)}`}>Open the channel page</a>
      </p>
      {/* A form (that never submits) so the browser treats the key field as a secret in one. */}
      <form class="card-form" id="obs" onSubmit={(e) => e.preventDefault()}>
        <h2>Streaming: OBS settings</h2>
        <p class="muted">
          In OBS, Settings → Stream: Service “Custom…”, then these two. Keep the key secret: anyone with it can stream
          to this channel.
        </p>
        <CopyField id="obs-server" label="Server" value={server} />
        {key ? (
          <CopyField id="stream-key" label="Stream Key" value={key} secret />
        ) : (
          <p class="muted" id="stream-key-owner-only">
            Only the channel's owner sees its stream key. Regenerating it stops the current one at once.
          </p>
        )}
        <button type="button" id="regenerate-key" onClick={regenerate}>
          Regenerate stream key
        </button>
      </form>
      <form class="card-form" onSubmit={save}>
        <h2>Channel</h2>
        <Field id="e-title" label="Title" value={form.title} onInput={set('title')} required maxLength={140} />
        <Field
          id="e-live-title"
          label="Live title (optional; shown while live)"
          value={form.live_title}
          onInput={set('live_title')}
          maxLength={140}
        />
        <TopicSelect id="e-topic" value={form.topic} onChange={set('topic')} topics={topics} />
        <div class="field">
          <label for="e-description">Description (Markdown: *emphasis*, **strong**, [links](https://…))</label>
          <textarea
            id="e-description"
            rows={5}
            maxLength={2000}
            value={form.description}
            onInput={(e) => set('description')((e.target as HTMLTextAreaElement).value)}
          />
        </div>
        {(
          [
            ['record', 'Record streams'],
            ['chat_enabled', 'Chat on'],
            ['protected', 'Protected: only invited people, or those with the invite code, may watch'],
          ] as const
        ).map(([k, label]) => (
          <div class="check" key={k}>
            <input id={`e-${k}`} type="checkbox" checked={form[k]} onChange={(e) => set(k)((e.target as HTMLInputElement).checked)} />
            <label for={`e-${k}`}>{label}</label>
          </div>
        ))}
        <ErrorBox error={error} />
        <Status text={status} />
        <button class="primary" type="submit">
          Save
        </button>
      </form>
      <section class="card-form" id="images" aria-labelledby="images-h">
        <h2 id="images-h">Images</h2>
        <ImageField ch={ch} kind="avatar" onChange={load} />
        <ImageField ch={ch} kind="banner" onChange={load} />
      </section>
      {ch.protected ? <Protection ch={ch} onChange={load} /> : null}
      <section class="card-form" id="chat-settings" aria-label="Chat settings">
        <ChatSettings slug={ch.slug} />
      </section>
      <section class="card-form danger">
        <h2>Delete</h2>
        <button type="button" class="danger" onClick={remove}>
          Delete this channel
        </button>
      </section>
    </>
  );
}

// --- channel images ------------------------------------------------------------------

const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp'];
const IMAGE_LIMITS = { avatar: 1 << 20, banner: 4 << 20 };

function ImageField({ ch, kind, onChange }: { ch: Channel; kind: 'avatar' | 'banner'; onChange: (c: Channel) => void }) {
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const [busy, setBusy] = useState(false);
  const url = kind === 'avatar' ? ch.avatar_url : ch.banner_url;
  const max = IMAGE_LIMITS[kind];
  const label = kind === 'avatar' ? 'Avatar' : 'Banner';
  const id = `e-${kind}`;
  const act = async (what: () => Promise<void>, done: string) => {
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
  const upload = (input: HTMLInputElement) => {
    const file = input.files?.[0];
    if (!file) return;
    // The server checks again (by the bytes); this saves sending what it would refuse.
    if (!IMAGE_TYPES.includes(file.type)) {
      setStatus('');
      setError(`${file.name} is not a PNG, JPEG or WebP image.`);
      input.value = '';
      return;
    }
    if (file.size > max) {
      setStatus('');
      setError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the ${kind} may be at most ${max >> 20} MiB.`);
      input.value = '';
      return;
    }
    void act(async () => {
      onChange(await api<Channel>('PUT', `/channels/${enc(ch.slug)}/${kind}`, undefined, file));
      input.value = '';
    }, `${label} updated.`);
  };
  const remove = () =>
    void act(async () => {
      await del(`/channels/${enc(ch.slug)}/${kind}`);
      onChange({ ...ch, [`${kind}_url`]: null });
    }, `${label} removed.`);
  return (
    <div class={`image-field ${kind}`}>
      {url ? (
        <img class={`preview ${kind}`} src={url} alt={`The channel's current ${kind}`} />
      ) : (
        <p class="muted">No {kind} yet.</p>
      )}
      <div class="field">
        <label for={id}>
          {label}: PNG, JPEG or WebP, at most {max >> 20} MiB{kind === 'banner' ? ' (wide, e.g. 1920×480)' : ' (square)'}
        </label>
        <input
          id={id}
          type="file"
          accept={IMAGE_TYPES.join(',')}
          disabled={busy}
          aria-describedby={error ? `${id}-error` : undefined}
          onChange={(e) => upload(e.target as HTMLInputElement)}
        />
      </div>
      {error ? (
        <p class="error" role="alert" id={`${id}-error`}>
          {error}
        </p>
      ) : null}
      <Status text={status} />
      {url ? (
        <button type="button" onClick={remove} disabled={busy}>
          Remove {kind}
        </button>
      ) : null}
    </div>
  );
}

// --- protected channels: invite code, invited users -------------------------------------

interface Invite {
  user: string;
  invited_at: number;
}

function Protection({ ch, onChange }: { ch: Channel; onChange: (c: Channel) => void }) {
  const [invites, setInvites] = useState<Invite[] | null>(null);
  const [fresh, setFresh] = useState<{ invite_code: string; invite_url: string } | null>(null);
  const [user, setUser] = useState('');
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const slug = ch.slug;
  const loadInvites = () =>
    get<{ invites: Invite[] }>(`/channels/${enc(slug)}/invites`).then((r) => setInvites(r.invites));
  useEffect(() => {
    loadInvites().catch((e) => setError(errorText(e)));
  }, [slug]);
  const act = async (what: () => Promise<unknown>, done: string) => {
    setError('');
    setStatus('');
    try {
      await what();
      setStatus(done);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const newCode = () => {
    if (ch.has_invite_code && !confirm('Make a new invite code? The old one, and the links with it, stop working.')) return;
    void act(async () => {
      setFresh(await post<{ invite_code: string; invite_url: string }>(`/channels/${enc(slug)}/invite-code`));
      onChange({ ...ch, has_invite_code: true });
    }, 'A new invite code is set.');
  };
  const clearCode = () => {
    if (!confirm('Remove the invite code? Links with it stop working.')) return;
    void act(async () => {
      await del(`/channels/${enc(slug)}/invite-code`);
      setFresh(null);
      onChange({ ...ch, has_invite_code: false });
    }, 'The invite code is removed.');
  };
  const invite = (e: Event) => {
    e.preventDefault();
    const name = user.trim();
    if (!name) return;
    void act(async () => {
      await post(`/channels/${enc(slug)}/invites`, { user: name });
      setUser('');
      await loadInvites();
    }, `${name} is invited.`);
  };
  const uninvite = (name: string) =>
    void act(async () => {
      await del(`/channels/${enc(slug)}/invites/${enc(name)}`);
      await loadInvites();
    }, `${name} is no longer invited.`);
  return (
    <section class="card-form" id="protection" aria-labelledby="protection-h">
      <h2 id="protection-h">Who may watch</h2>
      <p class="muted">
        This channel is protected: only you, admins, the people invited below and those with the invite code may watch
        it or see it in lists.
      </p>
      <h3>Invite code</h3>
      <p id="invite-code-state">
        {ch.has_invite_code ? 'There is an invite code (shown only when it is made).' : 'There is no invite code.'}
      </p>
      {fresh ? (
        <div id="new-invite">
          <CopyField id="invite-code" label="The new code (copy it now: it is not shown again)" value={fresh.invite_code} />
          <CopyField id="invite-url" label="Link with the code" value={fresh.invite_url} />
        </div>
      ) : null}
      <div class="inline">
        <button type="button" id="invite-code-new" onClick={newCode}>
          {ch.has_invite_code ? 'Make a new invite code' : 'Make an invite code'}
        </button>
        {ch.has_invite_code ? (
          <button type="button" class="danger" onClick={clearCode}>
            Remove the invite code
          </button>
        ) : null}
      </div>
      <h3>Invited users</h3>
      {invites === null ? (
        <p class="muted">Loading…</p>
      ) : invites.length === 0 ? (
        <p class="muted">Nobody is invited.</p>
      ) : (
        <ul class="rows" id="invites">
          {invites.map((i) => (
            <li class="row" key={i.user}>
              <div>
                <a href={`/u/${enc(i.user)}`}>{i.user}</a>
                <div class="muted">invited {fmtTime(i.invited_at)}</div>
              </div>
              <button type="button" aria-label={`Withdraw the invitation of ${i.user}`} onClick={() => uninvite(i.user)}>
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      <form class="inline" onSubmit={invite}>
        <label for="invite-user">Invite a user by name</label>
        <input
          id="invite-user"
          value={user}
          required
          maxLength={32}
          autoComplete="off"
          onInput={(e) => setUser((e.target as HTMLInputElement).value)}
        />
        <button type="submit">Invite</button>
      </form>
      <ErrorBox error={error} />
      <Status text={status} />
    </section>
  );
}

// --- API keys ----------------------------------------------------------------------

function fmtTime(t?: number | null): string {
  return t ? new Date(t * 1000).toLocaleString() : '—';
}

function ApiKeysTab() {
  useTitle('API keys');
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [name, setName] = useState('');
  const [days, setDays] = useState('');
  const [fresh, setFresh] = useState<ApiKey | null>(null);
  const [error, setError] = useState('');
  const load = () => get<{ keys: ApiKey[] }>('/me/api-keys').then((r) => setKeys(r.keys), (e) => setError(errorText(e)));
  useEffect(() => void load(), []);
  const create = async (e: Event) => {
    e.preventDefault();
    setError('');
    try {
      const d = Number(days);
      const k = await post<ApiKey>('/me/api-keys', {
        name,
        ...(d > 0 ? { expires_at: Math.floor(Date.now() / 1000) + Math.round(d * 86400) } : {}),
      });
      setFresh(k);
      setName('');
      setDays('');
      await load();
    } catch (err) {
      setError(errorText(err));
    }
  };
  const revoke = async (k: ApiKey) => {
    if (!confirm(`Revoke the key “${k.name}”?`)) return;
    try {
      await del(`/me/api-keys/${k.id}`);
      if (fresh?.id === k.id) setFresh(null);
      await load();
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <>
      <form class="card-form" onSubmit={create}>
        <h2>New API key</h2>
        <p class="muted">Send it as the X-API-Key header. It is shown once, now; Hearth keeps only a hash.</p>
        <Field id="k-name" label="Name" value={name} onInput={setName} required maxLength={64} />
        <Field id="k-days" label="Expires after (days, optional)" type="number" value={days} onInput={setDays} />
        <ErrorBox error={error} />
        <button class="primary" type="submit">
          Create key
        </button>
      </form>
      {fresh?.key ? (
        <section class="card-form" id="new-key">
          <CopyField id="api-key-new" label={`Your new key “${fresh.name}” (copy it now: it is not shown again)`} value={fresh.key} />
        </section>
      ) : null}
      <h2>Your keys</h2>
      {keys === null ? (
        <p class="muted">Loading…</p>
      ) : keys.length === 0 ? (
        <p class="muted">No API keys.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Key</th>
                <th scope="col">Created</th>
                <th scope="col">Last used</th>
                <th scope="col">Expires</th>
                <th scope="col" />
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr key={k.id}>
                  <td>{k.name}</td>
                  <td>
                    <code>{k.prefix}…</code>
                  </td>
                  <td>{fmtTime(k.created_at)}</td>
                  <td>{fmtTime(k.last_used)}</td>
                  <td>{k.expired ? 'expired' : fmtTime(k.expires_at)}</td>
                  <td>
                    <button type="button" onClick={() => void revoke(k)}>
                      Revoke
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

// --- topics (admins) -----------------------------------------------------------------
//
// GET|POST /topics exist on every server; PATCH and DELETE /topics/:slug are
// newer. Where they answer 404 or 405 while the topic is still listed, the
// server cannot do it yet, and the page says so instead of failing.

function TopicsTab() {
  useTitle('Topics');
  const { me } = useSession();
  const [topics, setTopics] = useState<Topic[] | null>(null);
  const [name, setName] = useState('');
  const [error, setError] = useState('');
  const [status, setStatus] = useState('');
  const load = () =>
    get<{ topics: Topic[] }>('/topics').then((r) => {
      setTopics(r.topics);
      return r.topics;
    });
  useEffect(() => {
    load().catch((e) => setError(errorText(e)));
  }, []);
  if (!isAdmin(me))
    return (
      <p class="muted" id="topics-admin-only">
        Only administrators manage topics.
      </p>
    );
  const act = async (what: () => Promise<string>) => {
    setError('');
    setStatus('');
    try {
      setStatus(await what());
    } catch (e) {
      setError(errorText(e));
    }
  };
  // A refused PATCH/DELETE: unsupported by this server, or the topic went.
  const missing = async (e: unknown, t: Topic, doing: string): Promise<never> => {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
      const now = await load().catch(() => null);
      if (now && now.some((x) => x.slug === t.slug))
        throw new Error(`This server cannot ${doing} topics yet (it needs a newer Hearth).`);
      throw new Error(`The topic “${t.name}” is gone (someone else removed it).`);
    }
    throw e;
  };
  const add = (e: Event) => {
    e.preventDefault();
    const n = name.trim();
    if (!n) return;
    void act(async () => {
      const t = await post<Topic>('/topics', { name: n });
      setName('');
      await load();
      return `Topic “${t.name}” added.`;
    });
  };
  const rename = (t: Topic, to: string) =>
    act(async () => {
      const n = to.trim();
      if (!n || n === t.name) return '';
      let r: Topic;
      try {
        r = await patch<Topic>(`/topics/${enc(t.slug)}`, { name: n });
      } catch (err) {
        return missing(err, t, 'rename');
      }
      await load();
      return `Topic “${t.name}” is now “${r.name || n}”.`;
    });
  const remove = (t: Topic) => {
    if (!confirm(`Delete the topic “${t.name}”? Its channels keep going, without a topic.`)) return;
    void act(async () => {
      try {
        await del(`/topics/${enc(t.slug)}`);
      } catch (err) {
        return missing(err, t, 'delete');
      }
      await load();
      return `Topic “${t.name}” deleted.`;
    });
  };
  return (
    <>
      <form class="card-form" onSubmit={add} id="topic-add">
        <h2>Add a topic</h2>
        <p class="muted">Streamers file their channels under these; the home page lists them.</p>
        <Field id="t-name" label="Topic name" value={name} onInput={setName} required maxLength={64} />
        <button class="primary" type="submit">
          Add topic
        </button>
      </form>
      <ErrorBox error={error} />
      <Status text={status} />
      <h2>Topics</h2>
      {topics === null ? (
        <p class="muted">Loading…</p>
      ) : topics.length === 0 ? (
        <p class="muted">No topics yet.</p>
      ) : (
        <ul class="rows" id="topics">
          {topics.map((t) => (
            <TopicRow key={`${t.slug}:${t.name}`} topic={t} onRename={rename} onDelete={remove} />
          ))}
        </ul>
      )}
    </>
  );
}

function TopicRow({
  topic,
  onRename,
  onDelete,
}: {
  topic: Topic;
  onRename: (t: Topic, to: string) => Promise<void>;
  onDelete: (t: Topic) => void;
}) {
  const [draft, setDraft] = useState(topic.name);
  const id = `topic-${topic.id}`;
  return (
    <li data-slug={topic.slug} data-name={topic.name}>
      <form
        class="topic-row"
        onSubmit={(e) => {
          e.preventDefault();
          void onRename(topic, draft);
        }}
      >
        <label class="visually-hidden" for={id}>
          Name of the topic “{topic.name}”
        </label>
        <input id={id} value={draft} required maxLength={64} onInput={(e) => setDraft((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={!draft.trim() || draft.trim() === topic.name} aria-label={`Rename the topic “${topic.name}”`}>
          Rename
        </button>
        <button type="button" class="danger" aria-label={`Delete the topic “${topic.name}”`} onClick={() => onDelete(topic)}>
          Delete
        </button>
        <a class="topic-slug muted" href={`/topic/${enc(topic.slug)}`}>
          /topic/{topic.slug}
        </a>
      </form>
    </li>
  );
}

// --- notifications -------------------------------------------------------------------

function NotificationsTab() {
  useTitle('Notifications');
  const [following, setFollowing] = useState<Channel[] | null>(null);
  const [notes, setNotes] = useState<Notification[] | null>(null);
  const [error, setError] = useState('');
  const load = () =>
    Promise.all([
      get<{ channels: Channel[] }>('/me/following').then((r) => setFollowing(r.channels)),
      get<{ notifications: Notification[] }>('/me/notifications?limit=50').then((r) => setNotes(r.notifications)),
    ]).catch((e) => setError(errorText(e)));
  useEffect(() => void load(), []);
  const toggle = async (c: Channel, on: boolean) => {
    setError('');
    try {
      const r = await post<{ notify_email?: boolean }>(`/channels/${enc(c.slug)}/follow`, { notify_email: on });
      const now = typeof r.notify_email === 'boolean' ? r.notify_email : on;
      setFollowing((list) => list && list.map((x) => (x.slug === c.slug ? { ...x, notify_email: now } : x)));
    } catch (e) {
      setError(errorText(e));
    }
  };
  const readAll = async () => {
    try {
      await post('/me/notifications/read', {});
      await load();
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <>
      <ErrorBox error={error} />
      <section class="card-form">
        <h2>E-mail when a channel goes live</h2>
        {following === null ? (
          <p class="muted">Loading…</p>
        ) : following.length === 0 ? (
          <p class="muted">
            You follow no channels. <a href="/">Find some</a>.
          </p>
        ) : (
          following.map((c) => (
            <div class="check" key={c.slug}>
              <input
                id={`n-${c.slug}`}
                type="checkbox"
                checked={Boolean(c.notify_email)}
                onChange={(e) => void toggle(c, (e.target as HTMLInputElement).checked)}
              />
              <label for={`n-${c.slug}`}>{c.title}</label>
            </div>
          ))
        )}
      </section>
      <h2>In-app notifications</h2>
      <NotificationList notes={notes} />
      {notes && notes.some((n) => !n.read_at) ? (
        <button type="button" onClick={() => void readAll()}>
          Mark all read
        </button>
      ) : null}
    </>
  );
}

export function NotificationList({ notes }: { notes: Notification[] | null }) {
  if (notes === null) return <p class="muted">Loading…</p>;
  if (!notes.length) return <p class="muted">No notifications.</p>;
  return (
    <ul class="rows">
      {notes.map((n) => (
        <li class={`row ${n.read_at ? '' : 'unread'}`} key={n.id}>
          <div>
            {n.channel ? <a href={`/c/${enc(n.channel.slug)}`}>{n.channel.title}</a> : 'A channel'} went live
            <div class="muted">{fmtTime(n.created_at)}</div>
          </div>
        </li>
      ))}
    </ul>
  );
}
