// The channel page /c/<slug>: the player (hls.js, low latency, quality menu
// when there are renditions, theatre and fullscreen), live/offline state that
// flips without a reload (the player retries, and the page polls the API),
// viewer and chatter counts, the banner behind the channel's header, the description (Markdown, rendered as DOM text), the follow
// button, and the chat (chat/panel.tsx) in <aside id="chat">.
import { useEffect, useRef, useState } from 'preact/hooks';

import { ApiError, del, enc, errorText, get, post, type Channel } from './api';
import { Avatar, BannerHead, ErrorBox, navigate, useSession, useTitle } from './app';
import { chatters, viewers } from './browse';
import { ChatPanel } from './chat/panel';
import { renderMarkdown } from './markdown';
import type { Level, LivePlayer } from './player';

function Description({ text }: { text: string }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (ref.current) ref.current.replaceChildren(renderMarkdown(text));
  }, [text]);
  return <div class="description" ref={ref} />;
}

export function ChannelPage({ slug }: { slug: string }) {
  const { me } = useSession();
  const [ch, setCh] = useState<Channel | null>(null);
  const [error, setError] = useState('');
  const [playerLive, setPlayerLive] = useState(false);
  const [overlay, setOverlay] = useState('Connecting…');
  const [latency, setLatency] = useState('');
  const [levels, setLevels] = useState<Level[]>([]);
  const [level, setLevel] = useState(-1);
  const [theatre, setTheatre] = useState(false);
  const [busy, setBusy] = useState(false);
  const video = useRef<HTMLVideoElement>(null);
  const box = useRef<HTMLDivElement>(null);
  const player = useRef<LivePlayer | null>(null);
  const invite = new URL(location.href).searchParams.get('invite');

  useTitle(ch ? ch.live?.title || ch.live_title || ch.title : slug);

  // The channel from the API, every 5 s: live state, viewers, title.
  useEffect(() => {
    let alive = true;
    const load = async () => {
      try {
        const c = await get<Channel>(`/channels/${enc(slug)}${invite ? `?invite=${enc(invite)}` : ''}`);
        if (!alive) return;
        setCh(c);
        setError('');
        if (c.live && player.current) player.current.kick();
      } catch (e) {
        if (!alive) return;
        setError(e instanceof ApiError && e.status === 404 ? 'There is no such channel.' : errorText(e));
      }
    };
    void load();
    const t = window.setInterval(load, 5000);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, [slug, me?.id]);

  // The player: hls.js is loaded only on this page.
  useEffect(() => {
    let p: LivePlayer | null = null;
    let cancelled = false;
    void import('./player').then(({ LivePlayer }) => {
      if (cancelled || !video.current) return;
      p = new LivePlayer(video.current, `/live/${enc(slug)}/master.m3u8`, {
        onState: (live, message) => {
          setPlayerLive(live);
          setOverlay(message);
          if (!live) setLevels([]);
        },
        onLevels: (l) => setLevels(l),
        onLatency: (s) => setLatency(`${s.toFixed(2)} s behind live`),
      });
      player.current = p;
    });
    return () => {
      cancelled = true;
      p?.destroy();
      player.current = null;
    };
  }, [slug]);

  const live = playerLive || Boolean(ch?.live);
  const title = ch ? ch.live?.title || ch.live_title || ch.title : slug;

  const follow = async () => {
    if (!me) {
      navigate(`/login?next=${enc(`/c/${slug}`)}`);
      return;
    }
    if (!ch) return;
    setBusy(true);
    try {
      const r = ch.following
        ? await del<{ following: boolean; followers: number }>(`/channels/${enc(slug)}/follow`)
        : await post<{ following: boolean; followers: number }>(`/channels/${enc(slug)}/follow`, {});
      setCh({ ...ch, following: r.following, followers: r.followers });
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  const fullscreen = () => {
    const el = box.current;
    if (!el) return;
    if (document.fullscreenElement) void document.exitFullscreen();
    else if (el.requestFullscreen) void el.requestFullscreen().catch(() => undefined);
    else (video.current as HTMLVideoElement & { webkitEnterFullscreen?: () => void })?.webkitEnterFullscreen?.();
  };

  return (
    <div class={`channel ${theatre ? 'theatre' : ''}`}>
      <section class="stage">
        <div class="player" ref={box}>
          <video id="video" ref={video} controls muted playsInline autoPlay />
          <div id="overlay" class="overlay" hidden={playerLive}>
            {overlay}
          </div>
        </div>
        <div class="controls" role="toolbar" aria-label="Player">
          {levels.length > 1 ? (
            <label>
              Quality{' '}
              <select
                id="quality"
                value={String(level)}
                onChange={(e) => {
                  const v = Number((e.target as HTMLSelectElement).value);
                  setLevel(v);
                  player.current?.setLevel(v);
                }}
              >
                <option value="-1">Auto</option>
                {levels.map((l) => (
                  <option key={l.index} value={String(l.index)}>
                    {l.label}
                  </option>
                ))}
              </select>
            </label>
          ) : null}
          <button id="theatre" aria-pressed={theatre} onClick={() => setTheatre(!theatre)}>
            Theatre
          </button>
          <button id="fullscreen" onClick={fullscreen}>
            Fullscreen
          </button>
        </div>
        <BannerHead url={ch?.banner_url} id="channel-head">
          <div class="meta">
            <Avatar url={ch?.avatar_url} name={title} size={48} />
            <div class="meta-text">
              <h1 id="title">{title}</h1>
              <div>
                <span id="state" class={`badge ${live ? 'live' : ''}`}>
                  {live ? 'live' : 'offline'}
                </span>{' '}
                {ch?.live ? (
                  <span id="viewers" class="muted">
                    {viewers(ch.live.viewers)}
                  </span>
                ) : null}{' '}
                {ch && ch.chat_enabled !== false && typeof ch.chatters === 'number' ? (
                  <span id="chatters" class="muted">
                    {chatters(ch.chatters)}
                  </span>
                ) : null}{' '}
                <span id="latency" class="muted">
                  {latency}
                </span>
              </div>
              {ch ? (
                <div class="muted">
                  <a href={`/u/${enc(ch.owner)}`}>{ch.owner}</a>
                  {ch.topic && ch.topic_slug ? (
                    <>
                      {' · '}
                      <a href={`/topic/${enc(ch.topic_slug)}`}>{ch.topic}</a>
                    </>
                  ) : null}
                  {` · ${ch.followers ?? 0} ${ch.followers === 1 ? 'follower' : 'followers'}`}
                </div>
              ) : null}
            </div>
            {ch && me && (ch.stream_key || ch.rtmp_url) ? (
              <a class="button" href={`/settings/channels/${enc(slug)}`}>
                Edit channel
              </a>
            ) : null}
            {ch ? (
              <button id="follow" class={ch.following ? '' : 'primary'} disabled={busy} onClick={() => void follow()}>
                {ch.following ? 'Unfollow' : 'Follow'}
              </button>
            ) : null}
          </div>
        </BannerHead>
        <ErrorBox error={error} />
        {ch?.description ? <Description text={ch.description} /> : null}
      </section>
      <aside id="chat" class="chat" aria-label="Chat" data-channel={slug}>
        <ChatPanel slug={slug} mode="page" chatters={ch?.chatters} />
      </aside>
    </div>
  );
}
