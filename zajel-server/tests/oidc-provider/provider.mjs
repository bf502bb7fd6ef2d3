// A real OpenID Connect provider (npm `oidc-provider`) for the identity tests, on loopback.
//
//   [TLS_CERT=cert.pem TLS_KEY=key.pem] node provider.mjs <redirect_uri> [client_id] [client_secret]
//
// Listens on a free 127.0.0.1 port (https when TLS_CERT and TLS_KEY name PEM files) and prints
// one line `listening <issuer>` when ready.
// devInteractions give a login form (any login/password; the login becomes `sub`) and a
// consent form; `/interaction/<uid>/abort` denies consent (error=access_denied).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import Provider from 'oidc-provider';

const [redirectUri, clientId = 'zajel-test', clientSecret = 'zajel-test-secret'] =
  process.argv.slice(2);
if (!redirectUri) {
  console.error('usage: node provider.mjs <redirect_uri> [client_id] [client_secret]');
  process.exit(2);
}

const tls = process.env.TLS_CERT && process.env.TLS_KEY;
const server = tls
  ? https.createServer({ cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) })
  : http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const op = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email', 'email_verified'] },
    findAccount: async (ctx, id) => ({
      accountId: id,
      claims: async () => ({
        sub: id,
        name: `Test ${id}`,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
      }),
    }),
    // Profile claims in the ID token itself, as Google does.
    conformIdTokenClaims: false,
    cookies: { keys: ['zajel-test-only-cookie-key'] },
  });
  op.proxy = false;
  server.on('request', op.callback());
  console.log(`listening ${issuer}`);
});
process.on('SIGTERM', () => process.exit(0));
