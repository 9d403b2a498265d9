// Account pages: log in, register, verify an e-mail address (?token=), and
// password reset (request a link; with ?token=, choose a new password).
import { useEffect, useState } from 'preact/hooks';

import { ApiError, errorText, post, type User } from './api';
import { ErrorBox, Field, navigate, registrationClosed, useLocation, useSession, useSite, useTitle } from './app';

type SessionAnswer = { user: User; csrf_token: string };

function nextPath(loc: URL, fallback = '/'): string {
  const n = loc.searchParams.get('next') || '';
  // Only paths on this site: never "//other.example" or "https://…".
  return /^\/(?!\/)/.test(n) ? n : fallback;
}

export function LoginPage() {
  useTitle('Log in');
  const loc = useLocation();
  const { signedIn } = useSession();
  const site = useSite();
  const [login, setLogin] = useState('');
  const [password, setPassword] = useState('');
  const [totp, setTotp] = useState('');
  const [needTotp, setNeedTotp] = useState(false);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const r = await post<SessionAnswer>('/auth/login', { login, password, ...(needTotp ? { totp } : {}) });
      signedIn(r.user, r.csrf_token);
      navigate(nextPath(loc), true);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'totp_required') {
        setNeedTotp(true);
        // The new field is the next thing to fill: put the keyboard there.
        window.setTimeout(() => document.getElementById('totp')?.focus(), 0);
      }
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="narrow card-form" onSubmit={submit}>
      <h1>Log in</h1>
      <Field id="login" label="Name or e-mail" value={login} onInput={setLogin} required autocomplete="username" />
      <Field
        id="password"
        label="Password"
        type="password"
        value={password}
        onInput={setPassword}
        required
        autocomplete="current-password"
      />
      {needTotp ? (
        <Field
          id="totp"
          label="Authenticator code"
          value={totp}
          onInput={setTotp}
          required
          autocomplete="one-time-code"
          inputMode="numeric"
          maxLength={8}
          hint="The 6-digit code your authenticator app shows for this site."
        />
      ) : null}
      <ErrorBox error={error} />
      <button class="primary" type="submit" disabled={busy}>
        Log in
      </button>
      <p class="muted">
        <a href="/reset">Forgot your password?</a>
        {site && !site.allow_registration ? null : (
          <>
            {' · '}
            <a href="/register">Create an account</a>
          </>
        )}
      </p>
    </form>
  );
}

export function RegisterPage() {
  useTitle('Sign up');
  const loc = useLocation();
  const { signedIn } = useSession();
  const site = useSite();
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [sent, setSent] = useState(false);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const r = await post<{ user: User; verification_required: boolean }>('/auth/register', {
        name,
        password,
        ...(email ? { email } : {}),
      });
      if (r.verification_required) {
        setSent(true);
        return;
      }
      const s = await post<SessionAnswer>('/auth/login', { login: name, password });
      signedIn(s.user, s.csrf_token);
      navigate(nextPath(loc, '/settings/channels'), true);
    } catch (err) {
      // Closed since the page asked (or the server has no GET /site): say so
      // plainly instead of a bare error under the form.
      if (err instanceof ApiError && err.code === 'registration_closed') registrationClosed();
      else setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  if (site && !site.allow_registration)
    return (
      <div class="narrow card-form" id="registration-closed">
        <h1>Sign up</h1>
        <p role="status">
          <strong>Registration is closed on this site.</strong> It takes no new accounts; ask its administrators if you
          need one.
        </p>
        <p class="muted">
          Have an account? <a href="/login">Log in</a>
        </p>
      </div>
    );
  if (sent)
    return (
      <div class="narrow">
        <h1>Check your e-mail</h1>
        <p id="verify-sent">We sent a link to {email}. Open it to confirm your address, then log in.</p>
      </div>
    );
  return (
    <form class="narrow card-form" onSubmit={submit}>
      <h1>Create an account</h1>
      <Field id="name" label="User name" value={name} onInput={setName} required autocomplete="username" maxLength={32} />
      <Field
        id="email"
        label="E-mail"
        type="email"
        value={email}
        onInput={setEmail}
        autocomplete="email"
        hint="Needed for password resets (and required where the instance verifies addresses)."
      />
      <Field
        id="password"
        label="Password"
        type="password"
        value={password}
        onInput={setPassword}
        required
        autocomplete="new-password"
        hint="At least 8 characters."
      />
      <ErrorBox error={error} />
      <button class="primary" type="submit" disabled={busy}>
        Sign up
      </button>
      <p class="muted">
        Have an account? <a href="/login">Log in</a>
      </p>
    </form>
  );
}

export function VerifyPage() {
  useTitle('Confirm e-mail');
  const loc = useLocation();
  const { signedIn } = useSession();
  const token = loc.searchParams.get('token') || '';
  const [state, setState] = useState<'working' | 'ok' | 'failed'>(token ? 'working' : 'failed');
  const [error, setError] = useState(token ? '' : 'This link has no token.');
  useEffect(() => {
    if (!token) return;
    post<Partial<SessionAnswer>>('/auth/verify', { token }).then(
      (r) => {
        if (r.user && r.csrf_token) signedIn(r.user, r.csrf_token);
        setState('ok');
      },
      (e) => {
        setState('failed');
        setError(errorText(e));
      },
    );
  }, [token]);
  return (
    <div class="narrow">
      <h1>Confirm your e-mail address</h1>
      {state === 'working' ? <p class="muted">Checking the link…</p> : null}
      {state === 'ok' ? (
        <p id="verified">
          Your address is confirmed. <a href="/settings">Go to your settings</a> or <a href="/login">log in</a>.
        </p>
      ) : null}
      <ErrorBox error={error} />
    </div>
  );
}

export function ResetPage() {
  useTitle('Reset password');
  const loc = useLocation();
  const token = loc.searchParams.get('token') || '';
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [done, setDone] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      if (token) {
        await post('/auth/password-reset/confirm', { token, password });
        setDone('Your password is changed. You can log in with it now.');
      } else {
        await post('/auth/password-reset', { email });
        setDone('If an account has that address, a link to reset its password is on its way.');
      }
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="narrow card-form" onSubmit={submit}>
      <h1>{token ? 'Choose a new password' : 'Reset your password'}</h1>
      {done ? (
        <p id="reset-done" role="status">
          {done} {token ? <a href="/login">Log in</a> : null}
        </p>
      ) : (
        <>
          {token ? (
            <Field
              id="password"
              label="New password"
              type="password"
              value={password}
              onInput={setPassword}
              required
              autocomplete="new-password"
            />
          ) : (
            <Field id="email" label="E-mail" type="email" value={email} onInput={setEmail} required autocomplete="email" />
          )}
          <ErrorBox error={error} />
          <button class="primary" type="submit" disabled={busy}>
            {token ? 'Set password' : 'Send reset link'}
          </button>
        </>
      )}
    </form>
  );
}
