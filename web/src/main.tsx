// Hearth's front end: one page application. The server answers every page
// path (/, /c/<slug>, /login, /settings/..., see src/app/pages.c) with this
// same HTML; this file picks the page from the address.
import { render } from 'preact';

import { Header, SessionProvider, useLocation } from './app';
import { LoginPage, RegisterPage, ResetPage, VerifyPage } from './auth';
import { HomePage, SearchPage, TopicPage } from './browse';
import { ChannelPage } from './channel';
import { ChatPopout } from './chat/popout';
import { FollowingPage } from './following';
import { ProfilePage } from './profile';
import { SettingsPage } from './settings';
import './style.css';

function seg(path: string, prefix: string): string | null {
  if (!path.startsWith(prefix)) return null;
  const rest = path.slice(prefix.length).replace(/\/$/, '');
  if (!rest || rest.includes('/')) return null;
  try {
    return decodeURIComponent(rest);
  } catch {
    return null;
  }
}

function Page() {
  const loc = useLocation();
  const path = loc.pathname;
  let s: string | null;
  if (path === '/' || path === '/index.html') return <HomePage />;
  if ((s = seg(path, '/c/')) !== null) return <ChannelPage key={s} slug={s} />;
  if ((s = seg(path, '/topic/')) !== null) return <TopicPage slug={s} />;
  if ((s = seg(path, '/u/')) !== null) return <ProfilePage key={s} name={s} />;
  if (path === '/search') return <SearchPage />;
  if (path === '/login') return <LoginPage />;
  if (path === '/register') return <RegisterPage />;
  if (path === '/verify') return <VerifyPage />;
  if (path === '/reset') return <ResetPage />;
  if (path === '/following') return <FollowingPage />;
  if (path === '/settings' || path.startsWith('/settings/')) return <SettingsPage path={path.replace(/\/$/, '') || '/settings'} />;
  return (
    <>
      <h1>Not found</h1>
      <p>
        There is no page here. <a href="/">Go home</a>.
      </p>
    </>
  );
}

function App() {
  return (
    <SessionProvider>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <Header />
      <main id="main" class="page" tabIndex={-1}>
        <Page />
      </main>
    </SessionProvider>
  );
}

// Old links (and a static setup without the server's redirect): the channel
// page lives at /c/<slug>.
{
  const w = seg(location.pathname, '/watch/');
  if (w !== null) history.replaceState(null, '', `/c/${encodeURIComponent(w)}${location.search}`);
}

// The pop-out chat /c/<slug>/chat (an OBS browser source too): the chat
// alone, without the site header (chat/popout.tsx).
const popout = /^\/c\/([^/]+)\/chat\/?$/.exec(location.pathname);
const popoutSlug = popout ? seg(`/c/${popout[1]}`, '/c/') : null;
render(
  popoutSlug !== null ? (
    <SessionProvider>
      <ChatPopout slug={popoutSlug} />
    </SessionProvider>
  ) : (
    <App />
  ),
  document.getElementById('app') as HTMLElement,
);
