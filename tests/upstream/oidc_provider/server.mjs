// A real OpenID provider (panva/node-oidc-provider) for the gateway's end-to-end test.
//
// Configuration comes from the environment: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI.
// One test account; the interaction (login, then consent) completes by itself, as if the
// person had signed in and agreed, so the test drives only HTTP redirects. It prints
// "listening <issuer>" on stdout once it accepts connections.

import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const ACCOUNT = {
  sub: 'test-account-1',
  name: 'Test Person',
  nickname: 'tester',
  email: 'tester@example.org',
  email_verified: true,
  picture: 'https://example.org/tester.png',
  birthdate: '1990-04-12',
  gender: 'female',
  // Not a catalogue field: the gateway must not keep it.
  locale: 'zh-CN',
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [{ ...signingKey, kid: 'test-key-1', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: ['consent-gateway-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'nickname', 'picture', 'birthdate', 'gender', 'locale'],
    email: ['email', 'email_verified'],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, sub) => (sub === ACCOUNT.sub
    ? { accountId: sub, claims: async () => ({ ...ACCOUNT }) }
    : undefined),
});

// The interaction page: sign in as the test account, then grant what the client asked for.
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) {
    await next();
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT.sub } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    result = { consent: { grantId: await grant.save() } };
  }
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
});

provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
