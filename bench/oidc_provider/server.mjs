// node oidc-provider as the benchmark's peer: the same shop-facing flows as the gateway,
// persisted to the same Redis server under its own key prefix. Started by `python -m bench`;
// not for any other use (the interaction step signs anyone in without asking).
//
// Environment:
//   PEER_PORT, PEER_ISSUER    where to listen and the issuer identifier (http://127.0.0.1:PORT)
//   PEER_REDIS_URL            redis://host:port/db
//   PEER_KEY_PREFIX           prefix of every key this process writes
//   PEER_CONFIG               JSON file: clients, accounts (claims), jwks, cookieKeys
//   PEER_WORKERS              processes (node cluster); 1 = no cluster
//
// Configured as a strong peer, comparable with the gateway:
// - client_secret_basic, PKCE (S256) required for every client, ES256 ID tokens;
// - refresh tokens issued on every code exchange and rotated on every use;
// - introspection and revocation enabled, each shop limited to its own tokens;
// - tokens do not end with the browser session (as the gateway's), so userinfo and
//   introspection do not load the session;
// - the interaction step is automatic: `login_hint` names the account, and the first
//   consent of an account to a client is stored as a standing grant found again by
//   loadExistingGrant, so later sign-ins ask nothing (consent already given).

import cluster from 'node:cluster';
import fs from 'node:fs';
import http from 'node:http';

import Redis from 'ioredis';
import Provider from 'oidc-provider';

import { redisAdapter, standingGrantKey } from './redis_adapter.mjs';

const env = process.env;
const port = Number(env.PEER_PORT);
const issuer = env.PEER_ISSUER;
const workers = Math.max(1, Number(env.PEER_WORKERS || '1'));
const config = JSON.parse(fs.readFileSync(env.PEER_CONFIG, 'utf8'));

function start() {
  const redis = new Redis(env.PEER_REDIS_URL, { keyPrefix: env.PEER_KEY_PREFIX, lazyConnect: false });
  const accounts = config.accounts;

  const provider = new Provider(issuer, {
    adapter: redisAdapter(redis),
    clients: config.clients,
    jwks: config.jwks,
    cookies: { keys: config.cookieKeys },
    findAccount: async (_ctx, sub) => (accounts[sub] ? {
      accountId: sub,
      async claims() { return { sub, ...accounts[sub] }; },
    } : undefined),
    claims: {
      openid: ['sub'],
      profile: ['name', 'nickname', 'picture', 'gender', 'birthdate'],
      email: ['email', 'email_verified'],
      phone: ['phone_number', 'phone_number_verified'],
      address: ['address'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'phone', 'address'],
    conformIdTokenClaims: true,
    features: {
      devInteractions: { enabled: false },
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    expiresWithSession: async () => false,
    async loadExistingGrant(ctx) {
      const clientId = ctx.oidc.client.clientId;
      let grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
      if (!grantId && ctx.oidc.session.accountId) {
        grantId = await redis.get(standingGrantKey(ctx.oidc.session.accountId, clientId));
      }
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AuthorizationCode: 600, // codes are minted before a token cell starts (as the gateway's)
      AccessToken: 3600,
      IdToken: 3600,
      RefreshToken: 30 * 86400,
      Interaction: 600,
      Session: 8 * 3600,
      Grant: 365 * 86400,
    },
  });

  async function interaction(req, res) {
    try {
      const details = await provider.interactionDetails(req, res);
      const { prompt, params, session } = details;
      if (prompt.name === 'login') {
        const accountId = accounts[params.login_hint] ? params.login_hint : Object.keys(accounts)[0];
        await provider.interactionFinished(req, res, { login: { accountId } },
          { mergeWithLastSubmission: false });
        return;
      }
      if (prompt.name === 'consent') {
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
        const missing = prompt.details;
        if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
        if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
        const grantId = await grant.save();
        await redis.set(standingGrantKey(session.accountId, params.client_id), grantId);
        await provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } },
          { mergeWithLastSubmission: true });
        return;
      }
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`unexpected prompt ${prompt.name}`);
    } catch (error) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(error));
    }
  }

  const callback = provider.callback();
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res);
    } else {
      callback(req, res);
    }
  });
  server.keepAliveTimeout = 65_000;
  server.listen(port, '127.0.0.1');

  const stop = () => {
    server.close();
    redis.quit().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  const stopAll = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', stopAll);
  process.on('SIGINT', stopAll);
  cluster.on('exit', () => {
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
} else {
  start();
}
