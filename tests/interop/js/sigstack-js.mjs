// Drive the sigstore-js library against a sigstack instance, for the compatibility suite.
//
//   node sigstack-js.mjs sign      ARTIFACT OUT            (sigstore.sign, Rekor v1)
//   node sigstack-js.mjs attest    PAYLOAD TYPE OUT        (sigstore.attest, Rekor v1)
//   node sigstack-js.mjs sign-sc   CONFIG ARTIFACT OUT     (bundleBuilderFromSigningConfig)
//   node sigstack-js.mjs attest-sc CONFIG PAYLOAD TYPE OUT (same, DSSE)
//   node sigstack-js.mjs verify    BUNDLE ARTIFACT|- IDENTITY ISSUER
//
// Service URLs, the token and TUF settings come from the environment:
// FULCIO_URL, REKOR_URL, TSA_URL, OIDC_TOKEN, TUF_MIRROR, TUF_ROOT, TUF_CACHE.
// Exit status 0 on success; on failure the error goes to stderr and the status is 1.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const sigstore = require("sigstore");
const sign = require("@sigstore/sign");
const { bundleToJSON } = require("@sigstore/bundle");
const { SigningConfig } = require("@sigstore/protobuf-specs");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
};

const signOptions = () => ({
  fulcioURL: env("FULCIO_URL"),
  rekorURL: env("REKOR_URL"),
  tsaServerURL: env("TSA_URL"),
  identityToken: env("OIDC_TOKEN"),
  timeout: 30000,
});

const builder = (configPath, bundleType) =>
  sign.bundleBuilderFromSigningConfig({
    signingConfig: SigningConfig.fromJSON(JSON.parse(readFileSync(configPath, "utf8"))),
    identityProvider: { getToken: async () => env("OIDC_TOKEN") },
    bundleType,
    fetchOptions: { timeout: 30000, retry: 0 },
  });

const write = (path, bundle) => writeFileSync(path, JSON.stringify(bundle));

const commands = {
  async sign([artifact, out]) {
    write(out, await sigstore.sign(readFileSync(artifact), signOptions()));
  },
  async attest([payload, type, out]) {
    write(out, await sigstore.attest(readFileSync(payload), type, signOptions()));
  },
  async "sign-sc"([config, artifact, out]) {
    const bundle = await builder(config, "messageSignature").create({ data: readFileSync(artifact) });
    write(out, bundleToJSON(bundle));
  },
  async "attest-sc"([config, payload, type, out]) {
    const bundle = await builder(config, "dsseEnvelope").create({ data: readFileSync(payload), type });
    write(out, bundleToJSON(bundle));
  },
  async verify([bundlePath, artifact, identity, issuer]) {
    const bundle = JSON.parse(readFileSync(bundlePath, "utf8"));
    const options = {
      tufMirrorURL: env("TUF_MIRROR"),
      tufRootPath: env("TUF_ROOT"),
      tufCachePath: env("TUF_CACHE"),
      certificateIdentityEmail: identity,
      certificateIssuer: issuer,
      timeout: 30000,
    };
    if (artifact === "-") await sigstore.verify(bundle, options);
    else await sigstore.verify(bundle, readFileSync(artifact), options);
  },
};

const [command, ...args] = process.argv.slice(2);
if (!commands[command]) {
  console.error(`usage: node sigstack-js.mjs {${Object.keys(commands).join("|")}} ...`);
  process.exit(2);
}
try {
  await commands[command](args);
} catch (error) {
  console.error(`${command} failed: ${error?.stack ?? error}`);
  process.exit(1);
}
