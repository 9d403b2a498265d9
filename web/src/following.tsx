// The channels the signed-in user follows, live ones first, and the latest
// "went live" notifications.
import { useEffect, useState } from 'preact/hooks';

import { errorText, get, type Channel, type Notification } from './api';
import { ErrorBox, RequireLogin, useTitle } from './app';
import { ChannelList } from './browse';
import { NotificationList } from './settings';

function Following() {
  useTitle('Following');
  const [channels, setChannels] = useState<Channel[] | undefined>(undefined);
  const [notes, setNotes] = useState<Notification[] | null>(null);
  const [error, setError] = useState('');
  useEffect(() => {
    const load = () =>
      Promise.all([
        get<{ channels: Channel[] }>('/me/following').then((r) =>
          setChannels([...r.channels].sort((a, b) => Number(Boolean(b.live)) - Number(Boolean(a.live)))),
        ),
        get<{ notifications: Notification[] }>('/me/notifications?limit=10').then((r) => setNotes(r.notifications)),
      ]).catch((e) => setError(errorText(e)));
    void load();
    const t = window.setInterval(load, 15000);
    return () => clearInterval(t);
  }, []);
  return (
    <>
      <h1>Following</h1>
      <ErrorBox error={error} />
      <ChannelList channels={channels} empty="You follow no channels yet." />
      <h2>Notifications</h2>
      <NotificationList notes={notes} />
      <p>
        <a href="/settings/notifications">Notification settings</a>
      </p>
    </>
  );
}

export function FollowingPage() {
  return (
    <RequireLogin>
      <Following />
    </RequireLogin>
  );
}
