// A user's public profile, /u/<name>: GET /api/v1/users/:name gives the
// name as stored, when the account was made and its channels with their live
// state (never the e-mail address). Live channels come first; the list is
// asked again now and then so a channel that goes live shows up. A channel's
// banner stands behind the header. An unknown or disabled account is a plain
// "no such user".
import { useEffect, useState } from 'preact/hooks';

import { ApiError, enc, errorText, get, type Channel } from './api';
import { Avatar, BannerHead, ErrorBox, useTitle } from './app';
import { ChannelList } from './browse';

interface Profile {
  name: string;
  created_at: number;
  channels: Channel[];
}

const REFRESH_MS = 15000;

export function ProfilePage({ name }: { name: string }) {
  const [profile, setProfile] = useState<Profile | null | undefined>(undefined); // null: no such user
  const [error, setError] = useState('');
  useTitle(profile?.name || name);
  useEffect(() => {
    let alive = true;
    setProfile(undefined);
    const load = () =>
      get<Profile>(`/users/${enc(name)}`).then(
        (p) => {
          if (!alive) return;
          setProfile(p);
          setError('');
        },
        (e) => {
          if (!alive) return;
          if (e instanceof ApiError && e.status === 404) setProfile(null);
          else setError(errorText(e));
        },
      );
    void load();
    const t = window.setInterval(load, REFRESH_MS);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, [name]);

  if (profile === null)
    return (
      <>
        <h1>No such user</h1>
        <p>
          There is no one called “{name}” here. <a href="/">Go home</a>.
        </p>
      </>
    );
  const channels = profile
    ? [...profile.channels].sort((a, b) => Number(Boolean(b.live)) - Number(Boolean(a.live)))
    : undefined;
  const live = channels?.filter((c) => c.live).length || 0;
  const avatar = channels?.find((c) => c.avatar_url)?.avatar_url;
  // A person has no banner of their own: their first channel's (a live one
  // first) stands behind the profile's header.
  const banner = channels?.find((c) => c.banner_url)?.banner_url;
  return (
    <>
      <BannerHead url={banner} id="profile-head">
        <div class="profile" id="profile">
          <Avatar url={avatar} name={profile?.name || name} size={64} />
          <div>
            <h1>{profile?.name || name}</h1>
            {profile ? (
              <p class="muted">
                Joined {new Date(profile.created_at * 1000).toLocaleDateString()}
                {live ? (
                  <>
                    {' · '}
                    <span class="badge live">live</span>
                  </>
                ) : null}
              </p>
            ) : null}
          </div>
        </div>
      </BannerHead>
      <ErrorBox error={error} />
      <h2>Channels</h2>
      <ChannelList channels={channels} empty={`${profile?.name || name} has no public channels.`} />
    </>
  );
}
