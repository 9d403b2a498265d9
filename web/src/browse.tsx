// Pages that list channels: home (live now, recent, topics), a topic, search
// results. A user's profile is profile.tsx.
import { useEffect, useState } from 'preact/hooks';

import { enc, errorText, get, type Channel, type LiveChannel, type Topic, type UserHit } from './api';
import { Avatar, ErrorBox, useLocation, useTitle } from './app';

function usePoll<T>(load: () => Promise<T>, deps: unknown[], everyMs = 0): [T | undefined, string] {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState('');
  useEffect(() => {
    let alive = true;
    const run = () =>
      load().then(
        (d) => alive && (setData(d), setError('')),
        (e) => alive && setError(errorText(e)),
      );
    void run();
    const t = everyMs ? window.setInterval(run, everyMs) : 0;
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, deps);
  return [data, error];
}

export function viewers(n: number): string {
  return `${n} ${n === 1 ? 'viewer' : 'viewers'}`;
}

// People in the chat room, as Twitch and Owncast show them next to viewers.
export function chatters(n: number): string {
  return `${n} ${n === 1 ? 'chatter' : 'chatters'}`;
}

export function LiveGrid({ live, empty }: { live: LiveChannel[] | undefined; empty: string }) {
  if (!live) return <p class="muted">Loading…</p>;
  if (!live.length) return <p class="muted">{empty}</p>;
  return (
    <ul class="cards" id="live">
      {live.map((ch) => (
        <li class="card live-card" key={ch.slug} data-slug={ch.slug}>
          <a class="cover" href={`/c/${enc(ch.slug)}`} aria-label={`${ch.title} (live)`}>
            <Avatar url={ch.avatar_url} name={ch.title || ch.slug} size={72} />
            <span class="badge live">live</span>
            <span class="viewers">
              <span class="n-viewers">{viewers(ch.viewers || 0)}</span>
              {typeof ch.chatters === 'number' ? (
                <>
                  {' · '}
                  <span class="n-chatters">{chatters(ch.chatters)}</span>
                </>
              ) : null}
            </span>
          </a>
          <div class="card-body">
            <a class="card-title" href={`/c/${enc(ch.slug)}`}>
              {ch.title || ch.slug}
            </a>
            <div class="muted">
              <a href={`/u/${enc(ch.owner)}`}>{ch.owner}</a>
              {ch.topic && ch.topic_slug ? (
                <>
                  {' · '}
                  <a href={`/topic/${enc(ch.topic_slug)}`}>{ch.topic}</a>
                </>
              ) : null}
            </div>
          </div>
        </li>
      ))}
    </ul>
  );
}

export function ChannelList({ channels, empty }: { channels: Channel[] | undefined; empty: string }) {
  if (!channels) return <p class="muted">Loading…</p>;
  if (!channels.length) return <p class="muted">{empty}</p>;
  return (
    <ul class="rows">
      {channels.map((ch) => (
        <li class="row" key={ch.slug}>
          <Avatar url={ch.avatar_url} name={ch.title || ch.slug} size={40} />
          <div>
            <a class="card-title" href={`/c/${enc(ch.slug)}`}>
              {ch.live_title || ch.title || ch.slug}
            </a>
            {ch.live ? <span class="badge live">live</span> : null}
            <div class="muted">
              <a href={`/u/${enc(ch.owner)}`}>{ch.owner}</a>
              {ch.topic && ch.topic_slug ? (
                <>
                  {' · '}
                  <a href={`/topic/${enc(ch.topic_slug)}`}>{ch.topic}</a>
                </>
              ) : null}
              {ch.live ? ` · ${viewers(ch.live.viewers || 0)}` : ''}
              {ch.live && typeof ch.chatters === 'number' ? ` · ${chatters(ch.chatters)}` : ''}
            </div>
          </div>
        </li>
      ))}
    </ul>
  );
}

function TopicChips({ topics }: { topics: Topic[] | undefined }) {
  if (!topics || !topics.length) return <p class="muted">No topics yet.</p>;
  return (
    <ul class="chips">
      {topics.map((t) => (
        <li key={t.slug}>
          <a href={`/topic/${enc(t.slug)}`}>{t.name}</a>
        </li>
      ))}
    </ul>
  );
}

export function HomePage() {
  useTitle('');
  const [live, liveErr] = usePoll(() => get<{ live: LiveChannel[] }>('/live').then((r) => r.live), [], 5000);
  const [recent] = usePoll(
    () => get<{ channels: Channel[] }>('/channels?sort=recent&limit=12').then((r) => r.channels),
    [],
    30000,
  );
  const [topics] = usePoll(() => get<{ topics: Topic[] }>('/topics').then((r) => r.topics), []);
  return (
    <>
      <h1>Live now</h1>
      <ErrorBox error={liveErr} />
      <LiveGrid live={live} empty="Nobody is live right now." />
      <h2>Recent channels</h2>
      <ChannelList channels={recent} empty="No channels yet." />
      <h2>Browse by topic</h2>
      <TopicChips topics={topics} />
    </>
  );
}

export function TopicPage({ slug }: { slug: string }) {
  const [topics] = usePoll(() => get<{ topics: Topic[] }>('/topics').then((r) => r.topics), []);
  const topic = topics?.find((t) => t.slug === slug);
  useTitle(topic?.name || slug);
  const [live] = usePoll(() => get<{ live: LiveChannel[] }>(`/live?topic=${enc(slug)}`).then((r) => r.live), [slug], 5000);
  const [channels, err] = usePoll(
    () => get<{ channels: Channel[] }>(`/channels?topic=${enc(slug)}&sort=recent`).then((r) => r.channels),
    [slug],
  );
  return (
    <>
      <h1>{topic?.name || slug}</h1>
      <ErrorBox error={err} />
      <h2>Live</h2>
      <LiveGrid live={live} empty="Nobody is live in this topic." />
      <h2>Channels</h2>
      <ChannelList channels={channels} empty="No channels in this topic yet." />
    </>
  );
}

export function SearchPage() {
  const loc = useLocation();
  const q = (loc.searchParams.get('q') || '').trim();
  useTitle(q ? `Search: ${q}` : 'Search');
  // GET /channels?q= matches titles, addresses and owners' names; servers
  // that also search accounts answer "users" beside "channels".
  const [found, err] = usePoll(
    () =>
      q
        ? get<{ channels: Channel[]; users?: UserHit[] }>(`/channels?q=${enc(q)}&limit=50`).then((r) => ({
            channels: r.channels,
            users: Array.isArray(r.users) ? r.users : null,
          }))
        : Promise.resolve({ channels: [] as Channel[], users: null }),
    [q],
  );
  const users = found?.users;
  return (
    <>
      <h1>Search</h1>
      <p class="muted" id="search-summary">
        {q ? `Channels and people matching “${q}”` : 'Type a channel or user name in the search box.'}
      </p>
      <ErrorBox error={err} />
      {q && users && users.length ? (
        <section aria-labelledby="search-people-h">
          <h2 id="search-people-h">People</h2>
          <ul class="chips" id="search-people">
            {users.map((u) => (
              <li key={u.name}>
                <a href={`/u/${enc(u.name)}`}>{u.name}</a>
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      {q ? (
        <section aria-labelledby="search-channels-h" id="search-channels">
          {users && users.length ? <h2 id="search-channels-h">Channels</h2> : (
            <h2 id="search-channels-h" class="visually-hidden">
              Channels
            </h2>
          )}
          <ChannelList
            channels={found?.channels}
            empty={users && users.length ? 'No channels match.' : 'Nothing matches.'}
          />
        </section>
      ) : null}
    </>
  );
}
