// An oidc-provider storage adapter on Redis (ioredis), written for the benchmark.
//
// The adapter interface is oidc-provider's (upsert, find, findByUid, findByUserCode, consume,
// destroy, revokeByGrantId). Each write is one MULTI (one round trip); reads are one GET or
// HGETALL. Keys, all under the run's prefix (ioredis keyPrefix):
//   <Model>:<id>            JSON string; single-use models (codes, refresh tokens) are a hash
//                           {payload, consumed} so that consume() is one HSET
//   grant:<grantId>         list of the token keys issued under a grant (revocation)
//   sessionUid:<uid>        session id by uid (findByUid)
//   userCode:<code>         device flow, unused here
//   standing:<account>:<client>  the grant a person gave a client (see server.mjs)

const grantable = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
]);
const consumable = new Set([
  'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

export function standingGrantKey(accountId, clientId) {
  return `standing:${accountId}:${clientId}`;
}

export function redisAdapter(client) {
  return class RedisAdapter {
    constructor(name) {
      this.name = name;
    }

    key(id) {
      return `${this.name}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const multi = client.multi();
      if (consumable.has(this.name)) {
        multi.del(key);
        multi.hset(key, 'payload', JSON.stringify(payload));
        if (expiresIn) multi.expire(key, expiresIn);
      } else if (expiresIn) {
        multi.set(key, JSON.stringify(payload), 'EX', expiresIn);
      } else {
        multi.set(key, JSON.stringify(payload));
      }
      if (grantable.has(this.name) && payload.grantId) {
        const grantKey = `grant:${payload.grantId}`;
        multi.rpush(grantKey, key);
        if (expiresIn) {
          // The list lives as long as its longest-lived token: set if none, extend if longer.
          multi.expire(grantKey, expiresIn, 'NX');
          multi.expire(grantKey, expiresIn, 'GT');
        }
      }
      if (this.name === 'Session' && payload.uid) {
        if (expiresIn) multi.set(`sessionUid:${payload.uid}`, id, 'EX', expiresIn);
        else multi.set(`sessionUid:${payload.uid}`, id);
      }
      if (payload.userCode) {
        multi.set(`userCode:${payload.userCode}`, id, 'EX', expiresIn || 600);
      }
      await multi.exec();
    }

    async find(id) {
      if (!id) return undefined;
      if (consumable.has(this.name)) {
        const data = await client.hgetall(this.key(id));
        if (!data || !data.payload) return undefined;
        const { payload, consumed } = data;
        const parsed = JSON.parse(payload);
        if (consumed) parsed.consumed = Number(consumed);
        return parsed;
      }
      const data = await client.get(this.key(id));
      return data ? JSON.parse(data) : undefined;
    }

    async findByUid(uid) {
      return this.find(await client.get(`sessionUid:${uid}`));
    }

    async findByUserCode(userCode) {
      return this.find(await client.get(`userCode:${userCode}`));
    }

    async consume(id) {
      await client.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000));
    }

    async destroy(id) {
      await client.del(this.key(id));
    }

    async revokeByGrantId(grantId) {
      const grantKey = `grant:${grantId}`;
      const tokens = await client.lrange(grantKey, 0, -1);
      const multi = client.multi();
      for (const token of tokens) multi.del(token);
      multi.del(grantKey);
      await multi.exec();
    }
  };
}
