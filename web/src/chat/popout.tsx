// The pop-out chat, /c/<slug>/chat: the channel's chat alone, filling the
// window, on a transparent background so that OBS can lay it over a stream
// as a browser source. `?overlay=1` makes it read-only and bare (no header,
// no input, no times, bigger outlined text) for exactly that use; without it
// the page is a normal, compact chat window a streamer can keep open.
//
// main.tsx renders this instead of the app shell (no site header), inside
// the session provider so that a signed-in streamer chats under their name.
import { useEffect } from 'preact/hooks';

import { useTitle } from '../app';
import { ChatPanel } from './panel';

export function ChatPopout({ slug }: { slug: string }) {
  const params = new URL(location.href).searchParams;
  const overlay = params.get('overlay') === '1';
  useTitle(`Chat · ${slug}`);
  useEffect(() => {
    const root = document.documentElement;
    root.classList.add('chat-popout-root');
    if (overlay) root.classList.add('chat-overlay-root');
    return () => root.classList.remove('chat-popout-root', 'chat-overlay-root');
  }, [overlay]);
  return (
    <main id="main" class="chat-popout-page">
      <ChatPanel slug={slug} mode={overlay ? 'overlay' : 'popout'} />
    </main>
  );
}
