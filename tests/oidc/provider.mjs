// A real OpenID Connect provider (the certified `oidc-provider` package) on loopback,
// for tests/test_oidc.py: `node provider.mjs CONFIG.json`, which prints one line
// "ready ISSUER" once it listens.
//
// CONFIG.json: {"port": N, "clients": [client metadata...], "state": "/path/state.json"}.
// The state file is read again on every request, so a test changes it between logins:
//   {"accounts": {"ada": {"password": "...", "claims": {"email": ..., "groups": [...]}}},
//    "id_token": {"audience": "other-client"} or {"expired": true} or absent}
// "id_token" makes the token endpoint answer with an ID token that the provider signs
// with its own key, but for another client (a wrong audience) or already expired: what
// a relying party must refuse.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const state = () => JSON.parse(readFileSync(config.state, 'utf8'));

const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomUUID(),
  alg: 'RS256',
  use: 'sig',
};

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// Plain pages: the package's own load web fonts from the internet.
const page = (title, body) => `<!doctype html><html><head><meta charset="utf-8">
<title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`;

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomUUID()] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const account = state().accounts[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account.claims }) };
  },
  // Every client must prove its authorization request (PKCE), confidential ones too.
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre>${escape(JSON.stringify(out))}</pre>`);
  },
});

async function formBody(req) {
  let raw = '';
  for await (const chunk of req) raw += chunk;
  return Object.fromEntries(new URLSearchParams(raw));
}

// The login and consent pages (what devInteractions does, with passwords checked).
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = prompt.name === 'login'
      ? page('Sign in', `<form method="post">
<label>Login <input name="login" autocomplete="username"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form>`)
      : page('Authorize', `<p>${escape(params.client_id)} asks for: ${escape(params.scope)}</p>
<form method="post"><button type="submit" name="consent" value="yes">Continue</button></form>`);
    return undefined;
  }
  const body = await formBody(ctx.req);
  if (prompt.name === 'login') {
    const account = state().accounts[body.login];
    if (!account || account.password !== body.password) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = page('Sign in', '<p role="alert">Wrong login or password.</p>');
      return undefined;
    }
    return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: body.login } });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  const result = { consent: { grantId: await grant.save() } };
  return provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
});

// The token endpoint's ID token, re-issued for another audience or already expired.
provider.use(async (ctx, next) => {
  await next();
  const change = state().id_token;
  if (ctx.path !== '/token' || ctx.status !== 200 || !ctx.body?.id_token || !change) return;
  const claims = JSON.parse(Buffer.from(ctx.body.id_token.split('.')[1], 'base64url'));
  const client = await provider.Client.find(change.audience ?? ctx.oidc.client.clientId);
  const token = new provider.IdToken({ sub: claims.sub }, { ctx, client });
  for (const [name, value] of Object.entries(claims)) {
    if (!['iss', 'aud', 'azp', 'exp', 'iat'].includes(name)) token.set(name, value);
  }
  const now = Math.floor(Date.now() / 1000);
  ctx.body = {
    ...ctx.body,
    id_token: await token.issue({ use: 'idtoken', expiresAt: change.expired ? now - 600 : null }),
  };
});

provider.listen(config.port, '127.0.0.1', () => console.log(`ready ${issuer}`));
