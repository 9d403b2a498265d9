// The REST API as the pages use it: JSON in and out, the session cookie, and
// the CSRF token (from POST /auth/login or GET /me) sent back as X-CSRF-Token
// on every state-changing request.

export interface User {
  id: number;
  name: string;
  email?: string | null;
  roles: string[];
  created_at?: number;
}

export interface LiveState {
  started_at: number;
  viewers: number;
  peak_viewers?: number;
  title?: string;
}

export interface Channel {
  id: number;
  slug: string;
  title: string;
  live_title?: string | null;
  owner: string;
  topic?: string | null;
  topic_slug?: string | null;
  description?: string;
  record?: boolean;
  chat_enabled?: boolean;
  protected?: boolean;
  followers?: number;
  created_at?: number;
  last_live_at?: number | null;
  avatar_url?: string | null;
  banner_url?: string | null;
  hls_url?: string;
  following?: boolean;
  notify_email?: boolean;
  live?: LiveState | null;
  chatters?: number; // people in the channel's chat room now
  // owner view
  stream_key?: string;
  rtmp_url?: string;
  obs?: { server: string | null; key: string };
  has_invite_code?: boolean;
}

export interface LiveChannel {
  slug: string;
  title: string;
  owner: string;
  topic?: string | null;
  topic_slug?: string | null;
  viewers: number;
  chatters?: number;
  peak_viewers?: number;
  started_at?: number;
  avatar_url?: string | null;
  channel_url?: string;
}

export interface Topic {
  id: number;
  name: string;
  slug: string;
}

// GET /api/v1/site: what every page may know about the instance. Servers
// without the route answer 404; the pages then assume SITE_DEFAULTS.
export interface Site {
  name: string;
  allow_registration: boolean;
  require_verification: boolean;
  public_url: string;
}

export const SITE_DEFAULTS: Site = {
  name: 'Hearth',
  allow_registration: true,
  require_verification: false,
  public_url: '',
};

// A user in search results (GET /channels?q= answers "users" beside
// "channels" where the server supports it).
export interface UserHit {
  name: string;
  created_at?: number;
}

export interface ApiKey {
  id: number;
  name: string;
  prefix: string;
  created_at: number;
  last_used?: number | null;
  expires_at?: number | null;
  expired?: boolean;
  key?: string;
}

export interface Notification {
  id: number;
  kind: string;
  channel?: { slug: string; title: string } | null;
  created_at: number;
  read_at?: number | null;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf = '';

export function setCsrf(token: string | undefined): void {
  csrf = token || '';
}

export async function api<T>(method: string, path: string, body?: unknown, raw?: Blob): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  let payload: BodyInit | undefined;
  if (raw) {
    payload = raw;
    headers['Content-Type'] = raw.type || 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  const res = await fetch(`/api/v1${path}`, { method, headers, body: payload, credentials: 'same-origin' });
  if (res.status === 204) return {} as T;
  let data: unknown = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = (data || {}) as { error?: string; code?: string };
    throw new ApiError(res.status, e.code || 'http_' + res.status, e.error || `HTTP ${res.status}`);
  }
  return data as T;
}

export const get = <T>(path: string) => api<T>('GET', path);
export const post = <T>(path: string, body?: unknown) => api<T>('POST', path, body ?? {});
export const patch = <T>(path: string, body: unknown) => api<T>('PATCH', path, body);
export const del = <T>(path: string, body?: unknown) => api<T>('DELETE', path, body);

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export const enc = encodeURIComponent;
