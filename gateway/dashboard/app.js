// Delivery Zone dashboard: a small client-side app on the gateway's JSON API.
//
// Plain ES module, no dependencies, no build step. Pages are built with DOM calls only (h() and
// svg() add text as text nodes), never from markup strings, so nothing from the server or the
// URL is parsed as HTML. State lives in memory only. Link tokens arrive in the URL fragment and
// leave the address bar (history.replaceState) as soon as they are read.

const main = document.getElementById('main');
const statusBox = document.getElementById('status');
const alertBox = document.getElementById('alert');
const mainNav = document.getElementById('main-nav');

const ROLES = ['viewer', 'developer', 'admin', 'owner'];
const rank = (role) => ROLES.indexOf(role);
const SCOPES = ['zones:read', 'zones:write', 'coverage:read'];
// openapi.json, components.schemas.SecurityEventName.
const EVENTS = `user_created user_email_verified authn_login_success authn_login_fail authn_login_lock
authn_mfa_challenged authn_password_change authn_password_change_fail
authn_password_reset_requested authn_password_reset session_created session_revoked
authn_token_created session_renewed authn_token_revoked authn_token_reuse authn_mfa_enrolled
authn_mfa_confirmed authn_mfa_disabled authn_mfa_fail authn_mfa_recovery_used
authn_apikey_created authn_apikey_rolled authn_apikey_revoked authn_apikey_fail
authn_apikey_in_url org_created org_mfa_required org_mfa_optional org_suspended org_reinstated
org_member_invited org_member_invitation_revoked org_member_joined privilege_permissions_changed
org_member_removed org_member_left authz_fail excess_rate_limit_exceeded sys_policy_reloaded
sys_policy_reload_fail sys_startup sys_shutdown sys_key_retired sys_totp_seeds_resealed
platform_operator_added platform_operator_disabled platform_operator_enabled
authn_platform_login_success authn_platform_login_fail authn_platform_logout
session_platform_expired platform_user_disabled platform_user_enabled
platform_user_sessions_ended platform_org_keys_revoked platform_reload platform_audit_purged
platform_audit_exported`.split(/\s+/);

const state = {
  me: null, // GET /auth/session, once known
  email: '', // the address just signed up with, for "Send the link again"
  flash: '', // an error for the next page (the session ended)
  note: '', // a status message for the next page
  tokens: {}, // link tokens read from the fragment, by page path
  afterLogin: '', // where to go once logged in (an invitation waiting)
};

// ---- DOM helpers -----------------------------------------------------------------------------

// The SVG namespace name (an identifier, never fetched), assembled so that no URL literal
// appears in this file.
const SVG_NS = ['http:', '', 'www.w3.org', '2000', 'svg'].join('/');

function build(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.slice(2), v); // onclick: ... and so on
    // Defence in depth, should data ever reach here as attributes: no inline handler (the
    // CSP would block it anyway) and no script URL.
    else if (/^on/i.test(k) || (/^(href|src|action|formaction)$/i.test(k) && /^\s*(javascript|data):/i.test(String(v)) && !String(v).startsWith('data:image/'))) continue;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}
// h(tag, attrs?, ...children): attrs is a plain object; anything else is a child.
const isAttrs = (a) => a && typeof a === 'object' && !(a instanceof Node) && !Array.isArray(a);
const h = (tag, a, ...kids) =>
  build(document.createElement(tag), isAttrs(a) && a, isAttrs(a) ? kids : [a, kids]);
const svg = (tag, attrs, ...kids) => build(document.createElementNS(SVG_NS, tag), attrs, kids);
const fill = (el, ...kids) => {
  el.replaceChildren();
  return build(el, null, kids);
};

let uid = 0;
const newId = (prefix = 'f') => `${prefix}${++uid}`;
const enc = encodeURIComponent;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const h1 = (text) => h('h1', { tabindex: '-1' }, text);
const link = (href, text, attrs) => h('a', { href, ...attrs }, text);
const para = (...kids) => h('p', kids);
const section = (title, ...kids) => h('section', h('h2', title), kids);
// A table row; a cell that is not a <td> already is wrapped in one, and false leaves no cell.
const row = (...cells) => h('tr', cells.filter((c) => c !== false)
  .map((c) => (c instanceof Element && c.tagName === 'TD' ? c : h('td', c))));
const input = (attrs) => h('input', { type: 'text', required: true, ...attrs });
const textInput = (name, maxlength) => input({ name, maxlength, autocomplete: 'off' });
const emailInput = (autocomplete = 'email') => input({ type: 'email', name: 'email', autocomplete });
const passwordInput = (name = 'password', autocomplete = 'current-password') =>
  input({ type: 'password', name, autocomplete });
const codeInput = () =>
  input({ name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', autocapitalize: 'off', spellcheck: 'false' });
const submit = (text) => h('button', { type: 'submit' }, text);
const PASSWORD_HINT = 'At least 8 characters. Common, repetitive or easily guessed passwords are refused.';

/** A labelled control, with an optional hint tied to it. */
function field(label, control, hint) {
  control.id ||= newId();
  const kids = [h('label', { for: control.id }, label)];
  if (hint) {
    const id = newId();
    kids.push(h('p', { class: 'hint', id }, hint));
    control.setAttribute('aria-describedby', id);
  }
  const check = control.type === 'checkbox';
  return h('div', { class: check ? 'field check' : 'field' }, check ? [control, kids] : [kids, control]);
}

/** A table in a focusable, horizontally scrolling wrapper. */
function table(caption, headers, body) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', h('caption', { class: 'visually-hidden' }, caption),
      h('thead', h('tr', headers.map((t) => h('th', { scope: 'col' }, t)))), body));
}

/** Run `action` once at a time, `el` marked busy meanwhile, and show its errors. */
function guard(el, busyAttr, action) {
  let busy = false;
  return async () => {
    if (busy) return;
    busy = true;
    el.setAttribute(busyAttr, 'true');
    showAlert('');
    try {
      await action();
    } catch (err) {
      fail(err);
    } finally {
      busy = false;
      el.removeAttribute(busyAttr);
    }
  };
}

/** A form that submits on Enter: `action(formData, form)`. */
function form(attrs, action, ...kids) {
  const f = h('form', { novalidate: true, ...attrs }, kids);
  const run = guard(f, 'aria-busy', () => action(new FormData(f), f));
  f.addEventListener('submit', (e) => {
    e.preventDefault();
    run();
  });
  return f;
}

/** A button for `action`: aria-disabled while busy (never disabled, so it keeps focus). */
function button(text, action, attrs) {
  const b = h('button', { type: 'button', ...attrs }, text);
  b.addEventListener('click', guard(b, 'aria-disabled', () => action(b)));
  return b;
}

/** Replace `old` with `node` and move focus there. */
function swap(old, node) {
  node.setAttribute('tabindex', '-1');
  old.replaceWith(node);
  node.focus();
}

/** After an update removed the focused element, put focus on `fallback`. */
function keepFocus(fallback) {
  if (!document.activeElement || document.activeElement === document.body) fallback.focus();
}

function when(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  return h('time', { datetime: d.toISOString() }, d.toLocaleString());
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    throw new Error('Copying failed. Select the text and copy it by hand.');
  }
}

function download(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Base64 of a string's UTF-8 bytes. */
function base64(text) {
  let bin = '';
  for (const byte of new TextEncoder().encode(text)) bin += String.fromCharCode(byte);
  return btoa(bin);
}

// ---- Messages --------------------------------------------------------------------------------

const say = (text) => { statusBox.textContent = text; };
const showAlert = (text) => { alertBox.textContent = text; };

class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super((problem && (problem.detail || problem.title)) || `The request failed (status ${status}).`);
    this.status = status;
    this.type = (problem && problem.type) || '';
    this.retryAfter = retryAfter;
  }
}

/** Thrown when a call sent the page elsewhere (to log in): nothing more to show. */
class Redirected extends Error {}

function errorText(e) {
  if (e instanceof ApiError && e.status === 429) {
    const n = Number(e.retryAfter);
    const secs = Math.ceil(Number.isFinite(n) ? n : (Date.parse(e.retryAfter) - Date.now()) / 1000);
    return secs > 0 ? `Too many attempts. Try again in ${secs} seconds.` : 'Too many attempts. Try again later.';
  }
  return (e && e.message) || 'Something went wrong. Try again.';
}

function fail(e) {
  if (!(e instanceof Redirected)) showAlert(errorText(e));
}

// ---- The API ---------------------------------------------------------------------------------

function csrfToken() {
  const m = /(?:^|;\s*)__Host-zonegate-csrf=([^;]*)/.exec(document.cookie);
  return m ? m[1].trim() : '';
}

let refreshing = null;

/** POST /auth/refresh, once for every call that meets a 401 meanwhile. */
function refreshSession() {
  if (!csrfToken()) return Promise.resolve(false);
  refreshing ||= fetch('/auth/refresh', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-CSRF-Token': csrfToken() },
  }).then((r) => r.ok, () => false).finally(() => { refreshing = null; });
  return refreshing;
}

function sessionEnded() {
  state.me = null;
  if (location.pathname !== '/login') {
    state.flash = 'Your session has ended. Please log in again.';
    go('/login', { replace: true });
  }
  throw new Redirected();
}

/**
 * Call the API. Unsafe methods carry the CSRF cookie's value in X-CSRF-Token. Unless
 * `anonymous`, a 401 tries one refresh and the call again, then sends the page to log in.
 * An error answer throws an ApiError carrying the problem's detail.
 */
async function api(path, { method = 'GET', body, anonymous = false } = {}, retried = false) {
  const headers = { Accept: 'application/json' };
  const token = method === 'GET' ? '' : csrfToken();
  if (token) headers['X-CSRF-Token'] = token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    // The mode stays the default 'cors': a same-origin request in that mode carries our Origin
    // even under Referrer-Policy: no-referrer, and the gateway's CSRF check needs it.
    res = await fetch(path, { method, headers, credentials: 'same-origin', body: body && JSON.stringify(body) });
  } catch {
    throw new Error('The server could not be reached. Check your connection and try again.');
  }
  if (res.status === 401 && !anonymous) {
    if (!retried && (await refreshSession())) return api(path, { method, body }, true);
    sessionEnded();
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep null
  }
  if (!res.ok) throw new ApiError(res.status, data, res.headers.get('Retry-After'));
  return data;
}
const post = (path, body, anonymous = false) => api(path, { method: 'POST', body, anonymous });
const del = (path) => api(path, { method: 'DELETE' });

/** The signed-in user; a page that needs one is sent to log in without. */
async function me() {
  if (!state.me) {
    if (!csrfToken()) sessionEnded(); // no login in this browser: nothing to ask
    state.me = await api('/auth/session');
  }
  return state.me;
}

/** The signed-in user or null, never leaving the page. */
async function whoami() {
  if (state.me || !csrfToken()) return state.me;
  const ask = () => api('/auth/session', { anonymous: true });
  try {
    state.me = await ask();
  } catch (e) {
    if (e.status === 401 && (await refreshSession())) state.me = await ask().catch(() => null);
  }
  return state.me;
}

/** The token of a mailed link (`#token=...`), removed from the address bar at once. */
function linkToken() {
  const path = location.pathname;
  const m = /(?:^#|&)token=([\w-]*)/.exec(location.hash);
  if (m) {
    state.tokens[path] = m[1]; // base64url: nothing to decode
    history.replaceState(null, '', path + location.search);
  }
  return state.tokens[path] || '';
}

// ---- Router ----------------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, home],
  [/^\/signup$/, signup],
  [/^\/check-email$/, checkEmail],
  [/^\/verify-email$/, verifyEmail],
  [/^\/login$/, login],
  [/^\/forgot-password$/, forgotPassword],
  [/^\/reset-password$/, resetPassword],
  [/^\/account$/, account],
  [/^\/accept-invitation$/, acceptInvitation],
  [/^\/orgs$/, orgs],
  [/^\/orgs\/([\w-]+)(?:\/(zones|api-keys|members|audit|settings))?$/, orgPage],
];

function route(path) {
  for (const [re, page] of ROUTES) {
    const m = re.exec(path);
    if (m) return page(...m.slice(1));
  }
  return notFound();
}

function go(path, { replace = false } = {}) {
  const same = path === location.pathname + location.search;
  history[replace || same ? 'replaceState' : 'pushState'](null, '', path);
  render(true);
}

let seq = 0;
let shown = '';

/** Render the page of the current path into <main>; with `focus`, move focus to its h1. */
async function render(focus) {
  const mine = ++seq;
  shown = location.pathname;
  showAlert('');
  say('');
  main.setAttribute('aria-busy', 'true');
  const slow = setTimeout(() => mine === seq && fill(main, para('Loading…')), 300);
  let view;
  let problem = '';
  try {
    view = await route(shown.replace(/(.)\/+$/, '$1'));
  } catch (e) {
    if (e instanceof Redirected) return;
    problem = errorText(e);
    view = [h1('This page could not be loaded'), para(link('/orgs', 'Your orgs'))];
  } finally {
    clearTimeout(slow);
  }
  if (mine !== seq || !view) return;
  fill(main, view);
  main.removeAttribute('aria-busy');
  updateNav();
  const heading = main.querySelector('h1');
  document.title = heading ? `${heading.textContent} – Delivery Zone` : 'Delivery Zone';
  showAlert(problem || state.flash);
  say(state.note);
  state.flash = '';
  state.note = '';
  if (focus && heading) heading.focus();
}

let navFor = null;

function updateNav() {
  const who = state.me ? state.me.email : '';
  if (who !== navFor) {
    navFor = who;
    fill(mainNav, who && h('ul', h('li', link('/orgs', 'Orgs')), h('li', link('/account', 'Account')),
      h('li', button('Log out', logOut))));
    mainNav.hidden = !who;
  }
  for (const a of mainNav.querySelectorAll('a')) {
    if (location.pathname === a.getAttribute('href')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function logOut() {
  await post('/auth/logout');
  state.me = null;
  state.note = 'You have logged out.';
  go('/login');
}

// Same-origin links navigate in the page; others (downloads, new tabs, other sites) as usual.
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target instanceof Element ? e.target.closest('a[href]') : null;
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !/^https?:$/.test(url.protocol)) return;
  e.preventDefault();
  if (url.pathname === location.pathname && url.hash) {
    // An in-page link (the skip link): move focus, keep the address.
    const target = document.getElementById(url.hash.slice(1));
    if (target) target.focus();
  } else {
    go(url.pathname + url.search);
  }
});

window.addEventListener('popstate', () => {
  if (location.pathname !== shown) render(true);
});

// ---- Pages: accounts -------------------------------------------------------------------------

async function home() {
  go((await whoami()) ? '/orgs' : '/login', { replace: true });
  return null;
}

function signup() {
  return [
    h1('Create your account'),
    form({}, async (fd) => {
      const email = fd.get('email').trim();
      await post('/auth/signup', { email, password: fd.get('password') }, true);
      state.email = email;
      go('/check-email');
    }, field('Email', emailInput()), field('Password', passwordInput('password', 'new-password'), PASSWORD_HINT),
    submit('Sign up')),
    para('Already have an account? ', link('/login', 'Log in')),
  ];
}

function checkEmail() {
  const email = state.email;
  return [
    h1('Check your email'),
    para('We sent a link to ', email ? h('strong', email) : 'your address', '. Open it, then log in.'),
    para('The link works once. If no mail arrives within a few minutes, look in your spam folder.'),
    email && button('Send the link again', async () => {
      await post('/auth/verify-email/resend', { email }, true);
      say('If the address still needs verifying, a new link is on its way. You can ask again in a minute.');
    }),
    para(link('/login', 'Log in')),
  ];
}

const brokenLink = (why) => [h1('This link does not work'), para(why),
  para('A link works once and expires after a while. ', link('/login', 'Log in'))];

async function verifyEmail() {
  const token = linkToken();
  delete state.tokens['/verify-email'];
  if (!token) return brokenLink('The link is incomplete. Open it from the mail again.');
  try {
    await post('/auth/verify-email', { token }, true);
  } catch (e) {
    return brokenLink(errorText(e));
  }
  return [h1('Email verified'), para('Your address is confirmed. You can log in now.'), para(link('/login', 'Log in'))];
}

function login() {
  const done = () => {
    const to = state.afterLogin || '/orgs';
    state.me = null;
    state.afterLogin = '';
    go(to);
  };
  const resend = h('p', { hidden: true }, link('/check-email', 'Send a new verification link'));
  const code = codeInput();
  const second = h('section', { hidden: true }, h('h2', 'Two-factor authentication'),
    para('Enter the six-digit code from your authenticator app, or one of your recovery codes.'),
    form({}, async (fd) => {
      await post('/auth/login/totp', { code: fd.get('code').trim() }, true);
      done();
    }, field('Authentication code', code), h('div', { class: 'actions' }, submit('Verify'),
      button('Start over', () => {
        second.hidden = true;
        first.hidden = false;
        first.reset();
        first.querySelector('input').focus();
      }, { class: 'secondary' }))));
  const first = form({}, async (fd) => {
    const email = fd.get('email').trim();
    resend.hidden = true;
    const res = await post('/auth/login', { email, password: fd.get('password') }, true).catch((e) => {
      if (e.type && e.type.endsWith(':email-not-verified')) {
        state.email = email;
        resend.hidden = false;
      }
      throw e;
    });
    if (!res || res.status !== 'second_factor_required') return done();
    first.hidden = true;
    second.hidden = false;
    code.value = '';
    code.focus();
  }, field('Email', emailInput('username')), field('Password', passwordInput()), submit('Log in'));
  return [h1('Log in'), first, resend, second,
    h('ul', { class: 'links' }, h('li', link('/signup', 'Create an account')),
      h('li', link('/forgot-password', 'Forgot your password?')))];
}

function forgotPassword() {
  const f = form({}, async (fd) => {
    const email = fd.get('email').trim();
    await post('/auth/password-reset', { email }, true);
    swap(f, para('If an account exists for ', h('strong', email),
      ', we sent it a link to choose a new password. The link works once, within 10 minutes.'));
  }, field('Email', emailInput()), submit('Send reset link'));
  return [h1('Reset your password'),
    para('Enter the email address of your account, and we will mail you a link to choose a new password.'),
    f, para(link('/login', 'Log in'))];
}

function resetPassword() {
  const token = linkToken();
  if (!token) {
    return [h1('Choose a new password'), para('This link is incomplete or was already used.'),
      para(link('/forgot-password', 'Ask for a new link'))];
  }
  const f = form({}, async (fd) => {
    await post('/auth/password-reset/confirm', { token, new_password: fd.get('new_password') }, true);
    delete state.tokens['/reset-password'];
    state.me = null;
    swap(f, h('div', para('Your new password is set. Every session of your account was ended.'),
      para(link('/login', 'Log in'))));
  }, field('New password', passwordInput('new_password', 'new-password'), PASSWORD_HINT), submit('Set new password'));
  return [h1('Choose a new password'), f];
}

async function account() {
  const who = await me();
  const sessions = h('tbody');
  const sessionsTable = table('Your sessions', ['Created', 'User agent', 'Expires', 'Action'], sessions);
  const mfa = h('div', { tabindex: '-1', class: 'panel' });

  async function loadSessions() {
    const { sessions: list } = await api('/auth/sessions');
    fill(sessions, list.map((s) => {
      const ua = h('td', { id: newId() }, s.user_agent || 'Unknown browser');
      const end = button('End session', async () => {
        await del(`/auth/sessions/${enc(s.id)}`);
        say('The session was ended.');
        await loadSessions();
        keepFocus(sessionsTable);
      }, { 'aria-describedby': ua.id });
      return row(when(s.created_at), ua, when(s.expires_at), s.current ? 'This session' : end);
    }));
  }

  async function loadMfa() {
    const st = await api('/auth/mfa/totp');
    fill(mfa, st.totp ? mfaOn(st) : mfaOff());
  }

  /** Show new content in the two-factor panel and move focus there. */
  const show = (content) => {
    fill(mfa, content);
    (mfa.querySelector('h3') || mfa).focus();
  };

  function mfaOff() {
    const password = passwordInput();
    const f = form({ hidden: true }, async (fd) => {
      show(enrol(await post('/auth/mfa/totp/enroll', { password: fd.get('password') })));
    }, field('Password', password, 'Enter your password to start.'), submit('Continue'));
    const start = button('Set up two-factor authentication', () => {
      start.hidden = true;
      f.hidden = false;
      password.focus();
    });
    return [para('Two-factor authentication is off. Turn it on to be asked for a code from an app at every login.'), start, f];
  }

  function enrol(enrolment) {
    return [
      h('h3', { tabindex: '-1' }, 'Set up your authenticator app'),
      h('ol', h('li', 'Scan the QR code with your authenticator app, or enter the secret key by hand.'),
        h('li', 'Enter the six-digit code the app shows, within 15 minutes.')),
      h('img', { class: 'qr', alt: 'QR code for your authenticator app', width: '200', height: '200',
        src: `data:image/svg+xml;base64,${base64(enrolment.qr_svg)}` }),
      para(h('label', { for: 'totp-secret' }, 'Secret key'), ' ', h('output', { id: 'totp-secret' }, enrolment.secret)),
      form({}, async (fd) => {
        const { recovery_codes: codes } = await post('/auth/mfa/totp/confirm', { code: fd.get('code').trim() });
        show(recoveryCodes(codes));
        say('Two-factor authentication is on. Your other sessions were ended.');
        loadSessions().catch(fail);
      }, field('Authentication code', codeInput()), submit('Confirm')),
    ];
  }

  function recoveryCodes(codes) {
    const text = `${codes.join('\n')}\n`;
    return [
      h('h3', { tabindex: '-1' }, 'Your recovery codes'),
      h('p', { class: 'warning' }, 'These codes are shown only once. Save them somewhere safe now: '
        + 'each one lets you log in once without your authenticator app.'),
      h('ul', { id: 'recovery-codes', class: 'codes' }, codes.map((c) => h('li', c))),
      h('div', { class: 'actions' },
        button('Copy codes', async () => {
          await copy(text);
          say('The recovery codes were copied.');
        }),
        button('Download codes', () => {
          download('delivery-zone-recovery-codes.txt', text);
          say('The recovery codes were downloaded.');
        }),
        button('I have saved them', async () => {
          await loadMfa();
          mfa.focus();
        }, { class: 'secondary' })),
    ];
  }

  function mfaOn(st) {
    return [
      para(h('strong', 'Two-factor authentication is on.')),
      para(`Recovery codes left: ${st.recovery_codes_left}`),
      h('h3', 'Turn it off'),
      form({}, async (fd) => {
        await post('/auth/mfa/totp/disable', { password: fd.get('password'), code: fd.get('code').trim() });
        say('Two-factor authentication is off. Your other sessions were ended.');
        await loadMfa();
        mfa.focus();
        loadSessions().catch(fail);
      }, field('Password', passwordInput()), field('Authentication code', codeInput()),
      submit('Turn off two-factor authentication')),
    ];
  }

  await Promise.all([loadSessions(), loadMfa()]);
  return [
    h1('Your account'),
    para('Signed in as ', h('strong', who.email), '.'),
    section('Sessions', sessionsTable),
    section('Change password', form({}, async (fd, f) => {
      await post('/auth/password', { current_password: fd.get('current_password'), new_password: fd.get('new_password') });
      f.reset();
      say('Your password is changed. Your other sessions were ended.');
      await loadSessions();
    }, field('Current password', passwordInput('current_password')),
    field('New password', passwordInput('new_password', 'new-password'), PASSWORD_HINT),
    submit('Change password'))),
    section('Two-factor authentication', mfa),
  ];
}

async function acceptInvitation() {
  const token = linkToken();
  if (!token) return [h1('Join an org'), para('This invitation link is incomplete or was already used.')];
  const who = await whoami();
  if (!who) {
    state.afterLogin = '/accept-invitation';
    return [h1('Join an org'),
      para('Log in first, with the address the invitation was sent to; you come back here afterwards.'),
      para(link('/login', 'Log in')),
      para('No account yet? ', link('/signup', 'Create an account'), ', then open the invitation link again.')];
  }
  return [h1('Join an org'),
    para('You are logged in as ', h('strong', who.email), '. Accept the invitation to join the org.'),
    button('Accept invitation', async () => {
      const org = await post('/v1/invitations/accept', { token });
      delete state.tokens['/accept-invitation'];
      state.note = `You joined ${org.name}.`;
      go(`/orgs/${enc(org.id)}`);
    })];
}

// ---- Pages: orgs -----------------------------------------------------------------------------

async function orgs() {
  await me();
  const { orgs: list } = await api('/v1/orgs');
  return [
    h1('Your orgs'),
    list.length
      ? h('ul', { class: 'list' }, list.map((o) =>
        h('li', link(`/orgs/${enc(o.id)}`, o.name), ' ', h('span', { class: 'muted' }, `(${o.role})`))))
      : para('You are not in any org yet. Create one, or open an invitation you were mailed.'),
    section('Create an org', form({}, async (fd) => {
      const org = await post('/v1/orgs', { name: fd.get('name').trim() });
      go(`/orgs/${enc(org.id)}`);
    }, field('Org name', textInput('name', 100)), submit('Create org'))),
  ];
}

const ORG_PAGES = {
  zones: ['Zones', zonesPage],
  'api-keys': ['API keys', apiKeysPage],
  members: ['Members', membersPage],
  audit: ['Audit log', auditPage],
  settings: ['Settings', settingsPage],
};

/** An org page: the org's bar (switcher and nav), then the page itself; `sub` empty for home. */
async function orgPage(id, sub) {
  await me();
  const base = `/v1/orgs/${enc(id)}`;
  const [org, { orgs: list }] = await Promise.all([api(base), api('/v1/orgs')]);
  const home = `/orgs/${enc(org.id)}`;
  if (!list.some((o) => o.id === org.id)) list.unshift(org);
  const bar = h('div', { class: 'orgbar' },
    sub && para('Org: ', link(home, org.name)),
    field('Switch org', h('select', { onchange: (e) => go(`/orgs/${enc(e.target.value)}${sub ? `/${sub}` : ''}`) },
      list.map((o) => h('option', { value: o.id, selected: o.id === org.id }, o.name)))),
    h('nav', { 'aria-label': 'Org', class: 'orgnav' }, h('ul', Object.entries(ORG_PAGES).map(([path, [label]]) =>
      h('li', link(`${home}/${path}`, label, { 'aria-current': path === sub ? 'page' : null }))))));
  if (sub) return [bar, await ORG_PAGES[sub][1](org, base)];
  return [h1(org.name), bar,
    para('Your role: ', h('strong', org.role || 'none')),
    para(org.require_mfa ? 'Every member of this org must log in with two-factor authentication.'
      : 'Two-factor authentication is optional in this org.'),
    para('Created ', when(org.created_at), '.')];
}

function settingsPage(org, base) {
  const owner = org.role === 'owner';
  const text = (on) => `Two-factor authentication is ${on ? 'required for every member' : 'not required'}.`;
  const current = para(text(org.require_mfa));
  const box = input({ type: 'checkbox', name: 'require_mfa', checked: org.require_mfa, required: false });
  return [
    h1('Settings'),
    current,
    !owner && para('Only owners change these settings.'),
    form({}, async () => {
      const updated = await api(base, { method: 'PATCH', body: { require_mfa: box.checked } });
      current.textContent = text(updated.require_mfa);
      say('Settings saved.');
    }, h('fieldset', { disabled: !owner }, h('legend', 'Security'),
      field('Require two-factor authentication for every member', box,
        'Members lose access until they log in with it. Only a session that used it can change this.'),
      submit('Save'))),
  ];
}

async function membersPage(org, base) {
  const admin = rank(org.role) >= rank('admin');
  const owner = org.role === 'owner';
  const roleOptions = (selected) => ROLES.filter((r) => owner || r !== 'owner')
    .map((r) => h('option', { value: r, selected: r === selected }, r));
  const members = h('tbody');
  const membersTable = table('Members', ['Email', 'Role', admin && 'Actions'].filter(Boolean), members);
  const invites = h('tbody');
  const invitesTable = table('Pending invitations', ['Email', 'Role', 'Expires', 'Action'], invites);

  async function loadMembers() {
    const { members: list } = await api(`${base}/members`);
    fill(members, list.map((m) => {
      const you = m.user_id === state.me.id;
      const email = h('td', { id: newId() }, m.email, you && ' (you)');
      return row(email, m.role, admin && (owner || m.role !== 'owner' ? memberControls(m, email.id, you) : '—'));
    }));
  }

  function memberControls(m, emailId, you) {
    const select = h('select', { id: newId() }, roleOptions(m.role));
    const done = async (message) => {
      say(message);
      await loadMembers();
      keepFocus(membersTable);
    };
    return h('div', { class: 'row-actions' },
      h('label', { for: select.id, class: 'visually-hidden' }, `Role of ${m.email}`), select,
      button('Change role', async () => {
        await api(`${base}/members/${enc(m.user_id)}`, { method: 'PUT', body: { role: select.value } });
        if (!you) return done(`${m.email} is now ${select.value}.`);
        state.note = `Your role is now ${select.value}.`;
        go(location.pathname); // what this page shows depends on the role
      }, { 'aria-describedby': emailId }),
      !you && button('Remove', async () => {
        if (!window.confirm(`Remove ${m.email} from ${org.name}?`)) return;
        await del(`${base}/members/${enc(m.user_id)}`);
        await done(`${m.email} was removed.`);
      }, { class: 'danger', 'aria-describedby': emailId }));
  }

  async function loadInvites() {
    const { invitations } = await api(`${base}/invitations`);
    fill(invites, invitations.length ? invitations.map((i) => {
      const email = h('td', { id: newId() }, i.email);
      return row(email, i.role, when(i.expires_at), button('Withdraw', async () => {
        await del(`${base}/invitations/${enc(i.id)}`);
        say(`The invitation to ${i.email} was withdrawn.`);
        await loadInvites();
        keepFocus(invitesTable);
      }, { class: 'danger', 'aria-describedby': email.id }));
    }) : row(h('td', { colspan: 4 }, 'No pending invitations.')));
  }

  await Promise.all([loadMembers(), admin && loadInvites()]);
  return [
    h1('Members'),
    membersTable,
    admin && section('Invite someone', form({}, async (fd, f) => {
      const email = fd.get('email').trim();
      await post(`${base}/invitations`, { email, role: fd.get('role') });
      f.reset();
      say(`An invitation was mailed to ${email}.`);
      await loadInvites();
    }, h('div', { class: 'inline-fields' }, field('Email', emailInput('off')),
      field('Role', h('select', { name: 'role' }, roleOptions('viewer')))),
    submit('Invite'))),
    admin && section('Pending invitations', invitesTable),
    section('Leave this org', para('You lose access at once. An org always keeps an owner, so its last owner cannot leave.'),
      button('Leave org', async () => {
        if (!window.confirm(`Leave ${org.name}?`)) return;
        await post(`${base}/leave`);
        state.note = `You left ${org.name}.`;
        go('/orgs');
      }, { class: 'danger' })),
  ];
}

async function apiKeysPage(org, base) {
  if (rank(org.role) < rank('admin')) return [h1('API keys'), para('Only admins manage API keys.')];
  const keys = h('tbody');
  const keysTable = table('API keys', ['Name', 'Key', 'Scopes', 'Last used', 'Created', 'Status', 'Actions'], keys);
  const secret = h('div', { class: 'secret', hidden: true, tabindex: '-1' });

  function showSecret(title, issued) {
    fill(secret, h('h2', title),
      h('p', { class: 'warning' }, 'Copy this key now. It will not be shown again.'),
      para(h('code', { id: 'new-key-secret' }, issued.key)),
      issued.previous_valid_until && para('The previous secret keeps working until ', when(issued.previous_valid_until), '.'),
      button('Copy key', async () => {
        await copy(issued.key);
        say('The key was copied.');
      }));
    secret.hidden = false;
    secret.focus();
  }

  async function load() {
    const { api_keys: list } = await api(`${base}/api-keys`);
    fill(keys, list.length ? list.map((k) => {
      const expired = k.expires_at != null && k.expires_at * 1000 <= Date.now();
      const status = k.revoked_at ? 'Revoked' : expired ? 'Expired' : 'Active';
      return row(k.name, h('code', k.hint), k.scopes.join(', '), k.last_used_at ? when(k.last_used_at) : 'never',
        when(k.created_at), status, status !== 'Active' ? '—' : h('div', { class: 'row-actions' },
          button('Roll', async () => {
            const rolled = await post(`${base}/api-keys/${enc(k.id)}/roll`);
            await load();
            showSecret(`New secret for ${k.name}`, rolled);
          }, { 'aria-label': `Roll ${k.name}` }),
          button('Revoke', async () => {
            if (!window.confirm(`Revoke the key ${k.name}? Every call with it is refused at once.`)) return;
            await del(`${base}/api-keys/${enc(k.id)}`);
            say(`The key ${k.name} was revoked.`);
            await load();
            keepFocus(keysTable);
          }, { class: 'danger', 'aria-label': `Revoke ${k.name}` })));
    }) : row(h('td', { colspan: 7 }, 'No API keys yet.')));
  }

  await load();
  return [
    h1('API keys'),
    section('Create a key', form({}, async (fd, f) => {
      const scopes = fd.getAll('scopes');
      if (!scopes.length) throw new Error('Choose at least one scope.');
      const issued = await post(`${base}/api-keys`, { name: fd.get('name').trim(), scopes });
      f.reset();
      await load();
      showSecret(`New key: ${issued.name}`, issued);
    }, field('Key name', textInput('name', 100)),
    h('fieldset', h('legend', 'Scopes'),
      SCOPES.map((s) => field(s, input({ type: 'checkbox', name: 'scopes', value: s, required: false })))),
    submit('Create key'))),
    secret,
    section('Keys', keysTable),
  ];
}

async function zonesPage(org, base) {
  const writer = rank(org.role) >= rank('developer');
  const list = h('ul', { class: 'list zones', tabindex: '-1' });
  const editor = writer && zoneEditor(base, load);

  const item = (z) => h('li', h('span', { class: 'name' }, z.name), writer && h('span', { class: 'row-actions' },
    button('Edit', () => editor.edit(z), { 'aria-label': `Edit ${z.name}` }),
    button('Delete', async () => {
      if (!window.confirm(`Delete the zone ${z.name}?`)) return;
      await del(`${base}/zones/${enc(z.id)}`);
      editor.forget(z.id);
      say(`The zone ${z.name} was deleted.`);
      await load();
      keepFocus(list);
    }, { class: 'danger', 'aria-label': `Delete ${z.name}` })));

  async function load() {
    const { zones } = await api(`${base}/zones`);
    fill(list, zones.length ? zones.map(item) : h('li', 'No zones yet.'));
    if (editor) editor.setZones(zones);
  }

  const degrees = (name, max) => input({ type: 'number', name, step: 'any', min: -max, max, inputmode: 'decimal' });
  const result = h('p', { role: 'status', class: 'result' });
  await load();
  return [
    h1('Zones'),
    list,
    editor && editor.element,
    section('Coverage', para('Which zones cover a point?'), form({}, async (fd) => {
      const [lat, lon] = [fd.get('lat'), fd.get('lon')].map((v) => String(v).trim());
      result.textContent = '';
      if (!lat || !lon) throw new Error('Enter a latitude and a longitude, in decimal degrees.');
      const cov = await api(`${base}/coverage?${new URLSearchParams({ lat, lon })}`);
      const names = cov.zones.map((z) => z.name).join(', ');
      result.textContent = names ? `Covered by: ${names}` : 'No zone covers this point.';
      if (editor) editor.mark(cov.lon, cov.lat);
    }, h('div', { class: 'inline-fields' }, field('Latitude', degrees('lat', 90)), field('Longitude', degrees('lon', 180))),
    submit('Check coverage')), result),
  ];
}

/** The rings ([[lon, lat], ...]) of a GeoJSON Polygon or MultiPolygon. */
function ringsOf(area) {
  const polygons = area && area.type === 'Polygon' ? [area.coordinates]
    : area && area.type === 'MultiPolygon' ? area.coordinates : [];
  if (!Array.isArray(polygons)) return [];
  return polygons.filter(Array.isArray).flat().filter((ring) => Array.isArray(ring)
    && ring.every((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1])));
}

const round5 = (v) => Math.round(v * 1e5) / 1e5;

/**
 * The zone form: a name, a drawing map (an equirectangular lon/lat graticule in an <svg>; no
 * tiles, no network; x = lon, y = -lat) and the GeoJSON textarea, kept in sync.
 */
function zoneEditor(base, reload) {
  const WIDTH = 360;
  const HEIGHT = 170; // latitude -85..85
  const view = { lon: 0, lat: 0, zoom: 1 };
  let corners = []; // the polygon being drawn, [lon, lat] without the closing position
  let rings = []; // what the textarea holds when it is not a simple polygon
  let others = []; // the org's zones, drawn for reference
  let marker = null; // the last coverage point
  let editing = null; // the zone being edited

  const name = textInput('name', 200);
  const geo = h('textarea', { name: 'area', rows: '5', spellcheck: 'false', class: 'mono', oninput: readGeo });
  const count = h('p', { class: 'hint', 'aria-live': 'polite' });
  const hint = h('p', { class: 'hint', id: newId() }, 'Click the map to add the corners of the zone in order; the GeoJSON below follows. '
    + 'Keyboard: arrow keys pan, + and - zoom, Enter adds a corner at the centre cross, Backspace removes the last one.');
  const layer = svg('g');
  const map = svg('svg', {
    class: 'map', tabindex: '0', 'aria-label': 'Map: click to add a corner of the zone',
    'aria-describedby': hint.id, preserveAspectRatio: 'xMidYMid meet', onclick: click, onkeydown: key,
  }, layer);
  const title = h('h2', { id: newId(), tabindex: '-1' }, 'New zone');
  const save = submit('Create zone');
  const cancel = button('Cancel editing', () => reset(), { class: 'secondary', hidden: true });

  const pathOf = (ring, close) => `M${ring.map(([x, y]) => `${x} ${-y}`).join('L')}${close ? 'Z' : ''}`;

  function draw() {
    const w = WIDTH / view.zoom;
    const hh = HEIGHT / view.zoom;
    view.lon = clamp(view.lon, w / 2 - 180, 180 - w / 2);
    view.lat = clamp(view.lat, hh / 2 - 85, 85 - hh / 2);
    const x0 = view.lon - w / 2;
    const y0 = -view.lat - hh / 2;
    map.setAttribute('viewBox', `${x0} ${y0} ${w} ${hh}`);
    // Graticule lines every 1, 2 or 5 times a power of ten degrees, about six across.
    const p = 10 ** Math.floor(Math.log10(w / 6));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= w / 6);
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    const r = w / 150;
    const size = w / 50;
    const kids = [svg('rect', { class: 'sea', x: x0, y: y0, width: w, height: hh })];
    let grid = '';
    const labels = [];
    for (let i = Math.ceil(x0 / step); i * step <= x0 + w; i++) {
      grid += `M${i * step} ${y0}V${y0 + hh}`;
      labels.push(svg('text', { x: i * step + r, y: y0 + size * 1.2, 'font-size': size }, `${(i * step).toFixed(digits)}°`));
    }
    for (let i = Math.ceil(y0 / step); i * step <= y0 + hh; i++) {
      grid += `M${x0} ${i * step}H${x0 + w}`;
      labels.push(svg('text', { x: x0 + r, y: i * step - r, 'font-size': size }, `${(-i * step || 0).toFixed(digits)}°`));
    }
    kids.push(svg('path', { class: 'grid', d: grid }), svg('path', { class: 'axis', d: 'M-180 0H180M0 -85V85' }),
      svg('g', { class: 'labels' }, labels));
    for (const z of others) {
      if (z.id === (editing && editing.id)) continue;
      kids.push(svg('path', { class: 'zone', d: ringsOf(z.area).map((g) => pathOf(g, true)).join('') }));
    }
    if (corners.length) {
      kids.push(svg('path', { class: 'shape', d: pathOf(corners, corners.length > 2) }));
      for (const [x, y] of corners) kids.push(svg('circle', { class: 'corner', cx: x, cy: -y, r }));
    } else if (rings.length) {
      kids.push(svg('path', { class: 'shape', d: rings.map((g) => pathOf(g, true)).join('') }));
    }
    if (marker) kids.push(svg('circle', { class: 'marker', cx: marker[0], cy: -marker[1], r: r * 1.5 }));
    const [cx, cy] = [view.lon, -view.lat];
    kids.push(svg('path', { class: 'cross', d: `M${cx - r * 4} ${cy}h${r * 8}M${cx} ${cy - r * 4}v${r * 8}` }));
    layer.replaceChildren(...kids);
    const n = corners.length;
    const counted = n ? `${plural(n, 'corner')}${n < 3 ? ': add at least 3.' : '.'}` : '';
    if (count.textContent !== counted) count.textContent = counted;
  }

  function readGeo() {
    corners = [];
    rings = [];
    try {
      const area = JSON.parse(geo.value);
      rings = ringsOf(area);
      if (area.type === 'Polygon' && rings.length === 1) {
        // A simple polygon: its corners, so that clicks go on adding to it.
        const [ring] = rings;
        const last = ring[ring.length - 1];
        corners = ring[0][0] === last[0] && ring[0][1] === last[1] ? ring.slice(0, -1) : ring.slice();
        rings = [];
      }
    } catch {
      // Not (yet) valid JSON: the map shows no shape until it is.
    }
    draw();
  }

  /** Change the corners (`change` edits the array), then the textarea and the map. */
  function update(change) {
    change(corners);
    rings = [];
    geo.value = corners.length > 2 ? JSON.stringify({ type: 'Polygon', coordinates: [[...corners, corners[0]]] }) : '';
    draw();
  }
  const add = (lon, lat) => update((c) => c.push([round5(clamp(lon, -180, 180)), round5(clamp(lat, -85, 85))]));
  const undo = () => update((c) => c.pop());
  const clear = () => update((c) => c.splice(0));

  function click(e) {
    const ctm = map.getScreenCTM();
    if (!ctm) return;
    const p = new DOMPoint(e.clientX, e.clientY).matrixTransform(ctm.inverse());
    add(p.x, -p.y);
  }

  /** Pan by quarters of the view (dx east, dy north) and zoom by `factor`. */
  function move(dx, dy, factor = 1) {
    view.lon += (dx * WIDTH) / view.zoom / 4;
    view.lat += (dy * HEIGHT) / view.zoom / 4;
    view.zoom = clamp(view.zoom * factor, 1, 2 ** 16);
    draw();
  }

  const KEYS = {
    ArrowUp: [0, 1], ArrowDown: [0, -1], ArrowLeft: [-1, 0], ArrowRight: [1, 0],
    '+': [0, 0, 2], '=': [0, 0, 2], '-': [0, 0, 0.5], _: [0, 0, 0.5],
  };
  function key(e) {
    if (KEYS[e.key]) move(...KEYS[e.key]);
    else if (e.key === 'Enter' || e.key === ' ') add(view.lon, view.lat);
    else if (e.key === 'Backspace' || e.key === 'Delete') undo();
    else return;
    e.preventDefault();
  }

  /** Centre and zoom the map on some rings. */
  function fit(list) {
    const points = list.flat();
    if (!points.length) return;
    const [xs, ys] = [0, 1].map((i) => points.map((pt) => pt[i]));
    const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const scale = Math.min(WIDTH / ((maxX - minX) * 1.5 || 1e-9), HEIGHT / ((maxY - minY) * 1.5 || 1e-9));
    view.zoom = clamp(2 ** Math.floor(Math.log2(scale)), 1, 2 ** 16);
    view.lon = (minX + maxX) / 2;
    view.lat = (minY + maxY) / 2;
  }

  function reset() {
    editing = null;
    name.value = '';
    title.textContent = 'New zone';
    save.textContent = 'Create zone';
    cancel.hidden = true;
    clear();
  }

  const f = form({}, async () => {
    let area;
    try {
      area = JSON.parse(geo.value);
    } catch {
      throw new Error(corners.length ? 'Add at least 3 corners to the map.'
        : 'Draw the zone on the map, or paste a GeoJSON Polygon into the text box.');
    }
    const body = { name: name.value.trim(), area };
    if (editing) await api(`${base}/zones/${enc(editing.id)}`, { method: 'PUT', body });
    else await post(`${base}/zones`, body);
    say(`The zone ${body.name} was ${editing ? 'saved' : 'created'}.`);
    reset();
    await reload();
  },
  field('Zone name', name),
  h('div', { class: 'map-box' }, map, hint, count,
    h('div', { class: 'map-controls' },
      button('Zoom in', () => move(0, 0, 2)), button('Zoom out', () => move(0, 0, 0.5)),
      button('Pan north', () => move(0, 1)), button('Pan south', () => move(0, -1)),
      button('Pan west', () => move(-1, 0)), button('Pan east', () => move(1, 0)),
      button('Remove last corner', undo))),
  field('GeoJSON polygon', geo, 'A GeoJSON Polygon or MultiPolygon, positions as [longitude, latitude].'),
  h('div', { class: 'actions' }, save, button('Clear', clear, { class: 'secondary' }), cancel));

  draw();
  let fitted = false;
  return {
    element: h('section', { 'aria-labelledby': title.id }, title, f),
    setZones(zones) {
      others = zones;
      if (!fitted && zones.length && !corners.length) {
        fitted = true;
        fit(zones.flatMap((z) => ringsOf(z.area)));
      }
      draw();
    },
    edit(z) {
      editing = z;
      name.value = z.name;
      geo.value = JSON.stringify(z.area);
      title.textContent = `Edit zone: ${z.name}`;
      save.textContent = 'Save zone';
      cancel.hidden = false;
      fit(ringsOf(z.area));
      readGeo();
      title.focus();
    },
    forget(id) {
      if (editing && editing.id === id) reset();
    },
    mark(lon, lat) {
      marker = [lon, lat];
      draw();
    },
  };
}

async function auditPage(org, base) {
  if (rank(org.role) < rank('admin')) return [h1('Audit log'), para('Only admins see the audit log.')];
  const events = h('tbody');
  const eventsTable = table('Security events', ['Time', 'Event', 'Actor', 'Details'], events);
  let query = {};
  let cursor = null;
  const more = button('Load more', async () => {
    say(`${plural(await load(true), 'more event')} shown.`);
    keepFocus(eventsTable);
  }, { hidden: true });

  const details = (d) => Object.entries(d || {})
    .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('; ');

  async function load(append) {
    const params = new URLSearchParams(query);
    if (append && cursor) params.set('cursor', cursor);
    const page = await api(`${base}/audit-events?${params}`);
    const rows = page.events.map((ev) => row(h('time', { datetime: ev.time }, new Date(ev.at).toLocaleString()),
      ev.event, ev.principal_id || '—', h('td', { class: 'details' }, details(ev.details))));
    if (append) events.append(...rows);
    else fill(events, rows.length ? rows : row(h('td', { colspan: 4 }, 'No events match.')));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    return rows.length;
  }

  // A datetime-local value is local time; the API takes RFC 3339 UTC. "To" includes its minute.
  const utc = (value, end) => {
    const t = new Date(value).getTime();
    if (Number.isNaN(t)) throw new Error('Enter a valid date and time.');
    return new Date(t + (end ? (value.length > 16 ? 999 : 59999) : 0)).toISOString();
  };

  await load(false);
  return [
    h1('Audit log'),
    form({}, async (fd) => {
      query = {};
      if (fd.get('event')) query.event = fd.get('event');
      if (fd.get('from')) query.from = utc(fd.get('from'), false);
      if (fd.get('to')) query.to = utc(fd.get('to'), true);
      say(`${plural(await load(false), 'event')} shown.`);
    }, h('div', { class: 'inline-fields' },
      field('Event', h('select', { name: 'event' }, h('option', { value: '' }, 'All events'),
        EVENTS.map((e) => h('option', { value: e }, e)))),
      field('From', input({ type: 'datetime-local', name: 'from', required: false })),
      field('To', input({ type: 'datetime-local', name: 'to', required: false }))),
    submit('Apply filters')),
    eventsTable,
    more,
  ];
}

function notFound() {
  return [h1('Page not found'), para('There is no page at this address.'), para(link('/', 'Go to the start page'))];
}

render(false);
