// A relying party on openid-client (panva, v6), remote-controlled by pytest.
//
// Protocol: one JSON object per line. pytest writes {"id", "op", "args"} to stdin; this
// script answers each with one line on stdout: {"id", "ok": true, "result"} or
// {"id", "ok": false, "error": {name, code, error, error_description, status, message}}.
// Nothing else is ever written to stdout. Operations: discover, authorization_url (by PAR
// with args.par), code_grant, userinfo, refresh, introspect, revoke, end_session_url; "exit" ends the
// process. The person's browser part (sign-in, consent, following the logout URL) stays
// in pytest; this side only does what a shop's server does with the library: every check
// is openid-client's own, with its defaults.
import * as readline from 'node:readline'
import * as client from 'openid-client'

const state = {
  config: undefined, // openid-client Configuration, after "discover"
  pending: undefined, // PKCE verifier, state and nonce of the last authorization URL
  tokens: undefined, // the last token endpoint response
  subject: undefined, // sub of the ID token, to check userinfo against
  dpop: undefined, // openid-client DPoP handle (RFC 9449), after "discover" with dpop_alg
}

// {DPoP: handle} when the shop uses DPoP, for the token and userinfo calls.
const dpopOptions = () => (state.dpop ? { DPoP: state.dpop } : undefined)

const WEBCRYPTO_ALGORITHMS = {
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  Ed25519: { name: 'Ed25519' },
}

async function clientAuthentication(args) {
  switch (args.auth) {
    case 'none':
      return client.None()
    case 'client_secret_basic':
      return client.ClientSecretBasic(args.client_secret)
    case 'client_secret_post':
      return client.ClientSecretPost(args.client_secret)
    case 'private_key_jwt': {
      // openid-client signs with the algorithm the key is imported for: RS256, PS256,
      // ES256 or (for an OKP key) Ed25519, as RFC 9864 names it.
      const { kid, alg, use, key_ops, ...jwk } = args.private_jwk
      const algorithm = WEBCRYPTO_ALGORITHMS[args.assertion_alg]
      if (!algorithm) throw new Error(`unknown assertion algorithm ${args.assertion_alg}`)
      const key = await crypto.subtle.importKey('jwk', jwk, algorithm, false, ['sign'])
      return client.PrivateKeyJwt({ key, kid })
    }
    default:
      throw new Error(`unknown client authentication ${args.auth}`)
  }
}

// Encrypted ID tokens and userinfo (OIDC Core §10.2), decrypted by openid-client with the
// shop's private key: {private_jwk, alg, enc}; only that alg and enc are accepted.
async function enableDecryption({ private_jwk, alg: jweAlg, enc }) {
  const { kid, alg, use, key_ops, ...jwk } = private_jwk
  const ecdh = jweAlg.startsWith('ECDH-ES')
  const algorithm = ecdh
    ? { name: 'ECDH', namedCurve: jwk.crv }
    : { name: 'RSA-OAEP', hash: jweAlg === 'RSA-OAEP' ? 'SHA-1' : `SHA-${jweAlg.slice(-3)}` }
  const key = await crypto.subtle.importKey(
    'jwk', jwk, algorithm, false, ecdh ? ['deriveBits'] : ['decrypt', 'unwrapKey'])
  client.enableDecryptingResponses(state.config, [enc], { key, alg: jweAlg, kid })
}

// A response as JSON, with what openid-client decrypted (inner JWS) under "decrypted".
function withDecrypted(response, result = { ...response }) {
  const decrypted = client.getDecryptedResponses(response)
  if (decrypted) result.decrypted = decrypted
  return result
}

function tokenResult(tokens) {
  const result = withDecrypted(tokens)
  if (tokens.id_token) result.claims = tokens.claims()
  return result
}

const operations = {
  async discover(args) {
    const metadata = { client_id: args.client_id, ...(args.metadata ?? {}) }
    state.config = await client.discovery(
      new URL(args.issuer), args.client_id, metadata, await clientAuthentication(args),
      // The live gateway listens on plain http on loopback; nothing else is relaxed.
      // "algorithm": "oidc" (OpenID Connect Discovery) or "oauth2" (RFC 8414).
      { execute: [client.allowInsecureRequests], algorithm: args.algorithm ?? 'oidc' },
    )
    if (args.decryption) await enableDecryption(args.decryption)
    // DPoP: a fresh key pair of the given algorithm; openid-client makes every proof and
    // retries once on use_dpop_nonce with the server's DPoP-Nonce.
    state.dpop = args.dpop_alg
      ? client.getDPoPHandle(state.config, await client.randomDPoPKeyPair(args.dpop_alg))
      : undefined
    return state.config.serverMetadata()
  },

  async authorization_url(args) {
    const codeVerifier = client.randomPKCECodeVerifier()
    const pending = {
      codeVerifier,
      state: client.randomState(),
      nonce: client.randomNonce(),
      maxAge: args.params?.max_age ? Number(args.params.max_age) : undefined,
    }
    const parameters = {
      redirect_uri: args.redirect_uri,
      scope: args.scope,
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
      ...(args.params ?? {}),
    }
    // "par": true pushes the parameters first (RFC 9126); the URL then carries only
    // client_id and request_uri. With DPoP the push carries a proof (RFC 9449 §10.1).
    const url = args.par
      ? await client.buildAuthorizationUrlWithPAR(state.config, parameters, dpopOptions())
      : client.buildAuthorizationUrl(state.config, parameters)
    state.pending = pending
    return { url: url.href, state: pending.state, nonce: pending.nonce }
  },

  async code_grant(args) {
    const pending = state.pending
    state.pending = undefined // one callback per authorization URL
    const tokens = await client.authorizationCodeGrant(state.config, new URL(args.callback_url), {
      pkceCodeVerifier: pending.codeVerifier,
      expectedState: pending.state,
      expectedNonce: pending.nonce,
      maxAge: pending.maxAge,
      idTokenExpected: true,
    }, undefined, dpopOptions())
    state.tokens = tokens
    state.subject = tokens.claims().sub
    return tokenResult(tokens)
  },

  async userinfo(args) {
    return withDecrypted(await client.fetchUserInfo(
      state.config, args.access_token ?? state.tokens.access_token, state.subject, dpopOptions()))
  },

  async refresh(args) {
    const tokens = await client.refreshTokenGrant(
      state.config, args.refresh_token ?? state.tokens.refresh_token, undefined, dpopOptions())
    state.tokens = tokens
    return tokenResult(tokens)
  },

  async introspect(args) {
    const hint = args.token_type_hint ? { token_type_hint: args.token_type_hint } : undefined
    return await client.tokenIntrospection(state.config, args.token, hint)
  },

  async revoke(args) {
    const hint = args.token_type_hint ? { token_type_hint: args.token_type_hint } : undefined
    await client.tokenRevocation(state.config, args.token, hint)
    return {}
  },

  async end_session_url(args) {
    return { url: client.buildEndSessionUrl(state.config, args.params).href }
  },
}

// What openid-client refused, flattened. "error" is the OAuth error code wherever the
// library found it: the response body, the authorization response, or (for a 401 with a
// WWW-Authenticate challenge, which openid-client reports as such) the challenge.
function describe(error) {
  const challenges = error?.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE' ? error.cause : undefined
  return {
    name: error?.name,
    code: error?.code,
    error: error?.error ?? challenges?.[0]?.parameters?.error,
    error_description: error?.error_description,
    status: error?.status,
    challenges,
    message: String(error?.message ?? error),
    cause: error?.cause instanceof Error ? String(error.cause.message) : undefined,
  }
}

function reply(message) {
  process.stdout.write(JSON.stringify(message) + '\n')
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of lines) {
  if (!line.trim()) continue
  let request
  try {
    request = JSON.parse(line)
  } catch (error) {
    reply({ id: null, ok: false, error: describe(error) })
    continue
  }
  if (request.op === 'exit') break
  const operation = operations[request.op]
  try {
    if (!operation) throw new Error(`unknown operation ${request.op}`)
    reply({ id: request.id, ok: true, result: await operation(request.args ?? {}) })
  } catch (error) {
    reply({ id: request.id, ok: false, error: describe(error) })
  }
}
lines.close()
