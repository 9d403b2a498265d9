// The shell every page shares: a client-side router over history.pushState,
// the signed-in user (GET /api/v1/me), the header with search and the
// account menu. The server answers every page path with the same HTML, so a
// deep link or a reload lands on the right page.
import { createContext, type ComponentChildren } from 'preact';
import { useContext, useEffect, useState } from 'preact/hooks';

import { ApiError, get, post, setCsrf, SITE_DEFAULTS, type Site, type User } from './api';

// --- routing -----------------------------------------------------------------

type Listener = () => void;
const listeners = new Set<Listener>();

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  window.scrollTo(0, 0);
  listeners.forEach((l) => l());
}

window.addEventListener('popstate', () => listeners.forEach((l) => l()));

// Same-origin links to pages go through the router; everything else (new
// tab, modifier keys, downloads, API and media URLs) is left to the browser.
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element | null)?.closest?.('a');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || /^\/(api|live)\//.test(url.pathname)) return;
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});

export function useLocation(): URL {
  const [, set] = useState(0);
  useEffect(() => {
    const l = () => set((n) => n + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return new URL(location.href);
}

// --- the signed-in user --------------------------------------------------------

export interface Session {
  me: User | null | undefined; // undefined: still asking
  refresh(): Promise<void>;
  signedIn(user: User, csrf: string): void;
  signOut(): Promise<void>;
}

export const SessionContext = createContext<Session>({
  me: undefined,
  refresh: async () => undefined,
  signedIn: () => undefined,
  signOut: async () => undefined,
});

export function useSession(): Session {
  return useContext(SessionContext);
}

export function SessionProvider({ children }: { children: ComponentChildren }) {
  const [me, setMe] = useState<User | null | undefined>(undefined);
  const refresh = async () => {
    try {
      const r = await get<{ user: User; csrf_token?: string }>('/me');
      setCsrf(r.csrf_token);
      setMe(r.user);
    } catch (e) {
      if (!(e instanceof ApiError)) console.warn('GET /api/v1/me:', e);
      setCsrf('');
      setMe(null);
    }
  };
  useEffect(() => void refresh(), []);
  const session: Session = {
    me,
    refresh,
    signedIn: (user, csrf) => {
      setCsrf(csrf);
      setMe(user);
    },
    signOut: async () => {
      try {
        await post('/auth/logout');
      } finally {
        setCsrf('');
        setMe(null);
      }
    },
  };
  return <SessionContext.Provider value={session}>{children}</SessionContext.Provider>;
}

// --- the site's public settings ------------------------------------------------
//
// GET /api/v1/site once per page load, shared by every component that asks.
// A server without the route (404) or an error leaves SITE_DEFAULTS, so the
// pages work as before; the server enforces its policy whatever a page shows.

let site: Site | null = null; // null: still asking
const siteListeners = new Set<() => void>();
let siteAsked = false;

function setSite(s: Site): void {
  site = s;
  siteListeners.forEach((l) => l());
}

function askSite(): void {
  if (siteAsked) return;
  siteAsked = true;
  get<Partial<Site>>('/site').then(
    (s) => setSite({ ...SITE_DEFAULTS, ...(s && typeof s === 'object' ? s : {}) }),
    (e) => {
      if (!(e instanceof ApiError)) console.warn('GET /api/v1/site:', e);
      setSite(SITE_DEFAULTS);
    },
  );
}

// The site's settings; null until known.
export function useSite(): Site | null {
  const [, set] = useState(0);
  useEffect(() => {
    const l = () => set((n) => n + 1);
    siteListeners.add(l);
    askSite();
    return () => void siteListeners.delete(l);
  }, []);
  return site;
}

// The server refused a sign-up as closed: every page follows (the header's
// link goes), whatever GET /site said or could not say.
export function registrationClosed(): void {
  setSite({ ...(site || SITE_DEFAULTS), allow_registration: false });
}

// --- small shared pieces -------------------------------------------------------

export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} — Hearth` : 'Hearth';
  }, [title]);
}

export function Header() {
  const { me, signOut } = useSession();
  const siteInfo = useSite();
  const loc = useLocation();
  const [q, setQ] = useState(loc.pathname === '/search' ? loc.searchParams.get('q') || '' : '');
  const [open, setOpen] = useState(false);
  const [unread, setUnread] = useState(0);
  useEffect(() => {
    if (!me) return;
    const load = () =>
      get<{ notifications: unknown[] }>('/me/notifications?unread=1&limit=50').then(
        (r) => setUnread(r.notifications.length),
        () => undefined,
      );
    void load();
    const t = window.setInterval(load, 60000);
    return () => clearInterval(t);
  }, [me?.id]);
  return (
    <header class="bar">
      <a class="brand" href="/">
        {siteInfo?.name || 'Hearth'}
      </a>
      <form
        class="search"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          navigate(`/search?q=${encodeURIComponent(q.trim())}`);
        }}
      >
        <label class="visually-hidden" for="search-q">
          Search channels and people
        </label>
        <input
          id="search-q"
          type="search"
          placeholder="Search"
          value={q}
          onInput={(e) => setQ((e.target as HTMLInputElement).value)}
        />
      </form>
      <button class="menu-toggle" aria-expanded={open} aria-controls="nav" onClick={() => setOpen(!open)}>
        Menu
      </button>
      <nav id="nav" class={open ? 'open' : ''} onClick={() => setOpen(false)}>
        {me ? (
          <>
            <a href="/following">
              Following
              {unread ? (
                <span class="count" aria-label={`${unread} unread notifications`}>
                  {unread}
                </span>
              ) : null}
            </a>
            <a href="/settings/channels">My channels</a>
            <a href="/settings" id="nav-user">
              {me.name}
            </a>
            <button class="linkish" onClick={() => void signOut().then(() => navigate('/'))}>
              Log out
            </button>
          </>
        ) : me === null ? (
          <>
            <a href={`/login?next=${encodeURIComponent(loc.pathname + loc.search)}`}>Log in</a>
            {siteInfo && siteInfo.allow_registration ? (
              <a href="/register" class="button" id="nav-register">
                Sign up
              </a>
            ) : null}
          </>
        ) : null}
      </nav>
    </header>
  );
}

export function Avatar({ url, name, size = 48 }: { url?: string | null; name: string; size?: number }) {
  if (url) return <img class="avatar" src={url} alt="" width={size} height={size} loading="lazy" />;
  return (
    <span class="avatar placeholder" style={{ width: `${size}px`, height: `${size}px` }} aria-hidden="true">
      {(name || '?').slice(0, 1).toUpperCase()}
    </span>
  );
}

// A page's header block (the channel's, a profile's) with the channel banner
// behind it when there is one: the picture fills the block and a gradient
// keeps the text readable. It sits below the player, so it never pushes the
// video down on a phone. The banner is decoration: empty alt text.
export function BannerHead({
  url,
  id,
  children,
}: {
  url?: string | null;
  id?: string;
  children: ComponentChildren;
}) {
  return (
    <div class={`banner-head${url ? ' has-banner' : ''}`} id={id}>
      {url ? <img class="banner" src={url} alt="" decoding="async" /> : null}
      {children}
    </div>
  );
}

export function ErrorBox({ error }: { error: string }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function RequireLogin({ children }: { children: ComponentChildren }) {
  const { me } = useSession();
  useEffect(() => {
    if (me === null) navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, true);
  }, [me]);
  if (!me) return <p class="muted">Loading…</p>;
  return <>{children}</>;
}

export function Field(props: {
  id: string;
  label: string;
  type?: string;
  value: string;
  onInput: (v: string) => void;
  required?: boolean;
  autocomplete?: string;
  hint?: string;
  maxLength?: number;
  inputMode?: 'numeric' | 'text' | 'email';
}) {
  return (
    <div class="field">
      <label for={props.id}>{props.label}</label>
      <input
        id={props.id}
        name={props.id}
        type={props.type || 'text'}
        value={props.value}
        required={props.required}
        autoComplete={props.autocomplete}
        maxLength={props.maxLength}
        inputMode={props.inputMode}
        aria-describedby={props.hint ? `${props.id}-hint` : undefined}
        onInput={(e) => props.onInput((e.target as HTMLInputElement).value)}
      />
      {props.hint ? (
        <small id={`${props.id}-hint`} class="muted">
          {props.hint}
        </small>
      ) : null}
    </div>
  );
}
