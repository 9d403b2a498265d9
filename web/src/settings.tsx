// Settings: profile (e-mail, password), channels (list, create, edit, avatar,
// stream key with copy and regenerate next to the OBS settings), API keys
// (create, list, revoke; a new key is shown once), notifications (per
// followed channel e-mail on/off, and the in-app list).
import { useEffect, useState } from 'preact/hooks';

import {
  api, del, enc, errorText, get, patch, post,
  type ApiKey, type Channel, type Notification, type Topic, type User,
} from './api';
import { ErrorBox, Field, navigate, RequireLogin, useSession, useTitle } from './app';

const TABS: [string, string][] = [
  ['/settings', 'Profile'],
  ['/settings/channels', 'Channels'],
  ['/settings/api-keys', 'API keys'],
  ['/settings/notifications', 'Notifications'],
];

export function SettingsPage({ path }: { path: string }) {
  const m = /^\/settings\/channels\/([^/]+)$/.exec(path);
  let body;
  if (m) body = <ChannelEdit slug={decodeURIComponent(m[1])} />;
  else if (path === '/settings/channels') body = <ChannelsTab />;
  else if (path === '/settings/api-keys') body = <ApiKeysTab />;
  else if (path === '/settings/notifications') body = <NotificationsTab />;
  else body = <ProfileTab />;
  const active = m ? '/settings/channels' : path.replace(/\/$/, '');
  return (
    <RequireLogin>
      <h1>Settings</h1>
      <nav class="tabs" aria-label="Settings">
        {TABS.map(([href, label]) => (
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
      <form class="card-form danger" onSubmit={remove}>
        <h2>Delete account</h2>
        <Field id="d-password" label="Password" type="password" value={delPw} onInput={setDelPw} required />
        <button type="submit" class="danger">
          Delete my account
        </button>
      </form>
    </>
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
  const upload = (file: File | undefined) => {
    if (!file) return;
    void run(async () => load(await api<Channel>('PUT', `/channels/${enc(slug)}/avatar`, undefined, file)), 'Avatar updated.');
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
      <section class="card-form" id="obs">
        <h2>Streaming: OBS settings</h2>
        <p class="muted">
          In OBS, Settings → Stream: Service “Custom…”, then these two. Keep the key secret: anyone with it can stream
          to this channel.
        </p>
        <CopyField id="obs-server" label="Server" value={server} />
        <CopyField id="stream-key" label="Stream Key" value={key} secret />
        <button type="button" id="regenerate-key" onClick={regenerate}>
          Regenerate stream key
        </button>
      </section>
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
            ['protected', 'Protected: only invited people may watch'],
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
      <section class="card-form">
        <h2>Avatar</h2>
        <div class="field">
          <label for="e-avatar">PNG, JPEG or WebP, at most 1 MiB</label>
          <input id="e-avatar" type="file" accept="image/png,image/jpeg,image/webp" onChange={(e) => upload((e.target as HTMLInputElement).files?.[0])} />
        </div>
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
    try {
      await post(`/channels/${enc(c.slug)}/follow`, { notify_email: on });
      await load();
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
