// A Matrix person on Element's crypto stack (matrix-js-sdk + its Rust crypto),
// driven by the readybot tests over JSON lines:
//
//   stdin:  {"id": n, "op": "...", ...args}
//   stdout: {"id": n, "ok": true, ...answer} | {"id": n, "ok": false, "error": "..."}
//           {"event": {...}} for each timeline event of a joined room after the first sync
//
// stdout carries the protocol and nothing else; every log line goes to stderr.
// tests/integration/element.py is the Python side and documents the operations.

import { Console } from "node:console";
import readline from "node:readline";

// The SDK (and the Rust crypto's tracing) log through `console`, and
// console.log writes to stdout: a stray log line there would break the
// protocol. Swap the global console before the SDK is loaded (hence the
// dynamic imports below: static imports would run first).
globalThis.console = new Console({ stdout: process.stderr, stderr: process.stderr });

const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");

const MEGOLM = "m.megolm.v1.aes-sha2";
const POLL_MS = 25;
const DEFAULT_WAIT_MS = 15_000;

const LEVELS = ["trace", "debug", "info", "warn", "error"];
// ELEMENT_PERSON_LOG=debug for the SDK's full chatter; info keeps the log readable.
const minLevel = Math.max(0, LEVELS.indexOf(process.env.ELEMENT_PERSON_LOG ?? "info"));

/** A Logger (the SDK's interface) writing to stderr, for createClient's `logger`. */
function stderrLogger(prefix) {
  const logger = { getChild: (name) => stderrLogger(`${prefix}${name}`) };
  LEVELS.forEach((level, index) => {
    logger[level] = (...args) => {
      if (index >= minLevel) console.error(new Date().toISOString(), level.toUpperCase(), prefix, ...args);
    };
  });
  return logger;
}

const log = stderrLogger("[person] ");

/** @type {import("matrix-js-sdk").MatrixClient | null} */
let client = null;
let password = null;
// The secret storage key made by bootstrap_secret_storage, handed back to the
// SDK whenever it asks (Element would prompt the user for it instead).
let secretStorageKey = null;
// Timeline events are reported only once the first sync is done, as the brief
// of this harness says: what happened before the person logged in is history.
let live = false;
// event id -> what was last reported, so a re-decryption (the room key came
// late) is reported again but a second path to the same event is not.
const reported = new Map();
// Reports go out in the order the timeline produced them, although each needs
// an await or two (decryption, shield) first.
let reportChain = Promise.resolve();

function write(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function describeError(error) {
  if (error instanceof sdk.MatrixError) {
    return `${error.errcode ?? "M_UNKNOWN"} (HTTP ${error.httpStatus}): ${error.message}`;
  }
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function requireClient() {
  if (client === null) throw new Error("not logged in: send a login request first");
  return client;
}

function requireCrypto() {
  const crypto = requireClient().getCrypto();
  if (!crypto) throw new Error("the client has no crypto");
  return crypto;
}

/** Resolves once `check()` is truthy; rejects after `timeoutMs` naming `what`. */
async function waitUntil(check, what, timeoutMs = DEFAULT_WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function membership(roomId, userId) {
  return requireClient().getRoom(roomId)?.getMember(userId)?.membership ?? null;
}

// -- events -------------------------------------------------------------------

const SHIELD_COLOURS = { [cryptoApi.EventShieldColour.NONE]: "none", [cryptoApi.EventShieldColour.GREY]: "grey", [cryptoApi.EventShieldColour.RED]: "red" };

async function shieldOf(event) {
  if (!event.isEncrypted()) return null;
  const info = await requireCrypto().getEncryptionInfoForEvent(event);
  // null: the event could not be decrypted, so there is nothing to vouch for.
  if (info === null) return null;
  return {
    colour: SHIELD_COLOURS[info.shieldColour] ?? String(info.shieldColour),
    reason: info.shieldReason === null ? null : (cryptoApi.EventShieldReason[info.shieldReason] ?? String(info.shieldReason)),
  };
}

async function describeEvent(event) {
  const encrypted = event.isEncrypted();
  const failure = event.isDecryptionFailure() ? (event.decryptionFailureReason ?? "UNKNOWN_ERROR") : null;
  const wire = event.getWireContent();
  const described = {
    room_id: event.getRoomId(),
    event_id: event.getId(),
    sender: event.getSender(),
    // For a failed decryption getType() is m.room.message with a placeholder
    // body: report the wire type so nobody mistakes it for a message.
    type: failure === null ? event.getType() : event.getWireType(),
    content: failure === null ? event.getContent() : wire,
    encrypted,
    decryption_failure: failure,
    shield: failure === null ? await shieldOf(event) : null,
    origin_server_ts: event.getTs(),
  };
  if (event.isState()) described.state_key = event.getStateKey();
  if (encrypted) {
    // The device id is only what the sender claims in the clear (Megolm
    // content); the Curve25519 key is the one the room key came from.
    if (typeof wire.device_id === "string") described.sender_device = wire.device_id;
    const senderKey = event.getSenderKey();
    if (senderKey) described.sender_curve25519 = senderKey;
  }
  return described;
}

function report(event) {
  reportChain = reportChain.then(async () => {
    const id = event.getId();
    // A local echo has a made-up id until the server answers; it is reported
    // when the remote echo (or the send's answer) gives it its real one.
    if (!id || id.startsWith("~") || event.status !== null) return;
    let described;
    try {
      described = await describeEvent(event);
    } catch (error) {
      log.warn(`could not describe ${id}:`, error);
      return;
    }
    const signature = `${described.type}|${described.decryption_failure}|${JSON.stringify(described.shield)}`;
    if (reported.get(id) === signature) return;
    reported.set(id, signature);
    write({ event: described });
  });
}

async function onTimeline(event, room, toStartOfTimeline, removed, data) {
  if (!live || toStartOfTimeline || removed || !data?.liveEvent) return;
  const client = requireClient();
  // Decryption runs in the background; wait for its first outcome (success
  // or a failure reason) so the report says which.
  await client.decryptEventIfNeeded(event);
  report(event);
}

// -- operations ----------------------------------------------------------------

const ops = {
  async login({ homeserver, user_id: userId, password: pass, device_name: deviceName }) {
    if (client !== null) throw new Error("already logged in");
    const loginClient = sdk.createClient({ baseUrl: homeserver, logger: stderrLogger("[login] ") });
    const response = await loginClient.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: userId },
      password: pass,
      initial_device_display_name: deviceName ?? "readybot-tests (Element crypto)",
    });
    password = pass;
    client = sdk.createClient({
      baseUrl: homeserver,
      userId: response.user_id,
      deviceId: response.device_id,
      accessToken: response.access_token,
      logger: stderrLogger(`[${response.user_id}] `),
      cryptoCallbacks: {
        getSecretStorageKey: async ({ keys }) => {
          if (secretStorageKey !== null && secretStorageKey.keyId in keys) {
            return [secretStorageKey.keyId, secretStorageKey.privateKey];
          }
          return null;
        },
        cacheSecretStorageKey: (keyId, keyInfo, privateKey) => {
          secretStorageKey = { keyId, privateKey };
        },
      },
    });
    // In memory: one process is one device, gone when it exits.
    await client.initRustCrypto({ useIndexedDB: false });
    client.on(sdk.RoomEvent.Timeline, (...args) => {
      onTimeline(...args).catch((error) => log.warn("timeline handler failed:", error));
    });
    // Our own events: the send answer or the remote echo gives the local echo its real id.
    client.on(sdk.RoomEvent.LocalEchoUpdated, (event) => {
      if (live) report(event);
    });
    // A room key that arrives after its messages: the SDK retries and emits this.
    client.on(sdk.MatrixEventEvent.Decrypted, (event) => {
      if (live && reported.has(event.getId())) report(event);
    });
    const prepared = new Promise((resolve, reject) => {
      const onSync = (state, previous, data) => {
        if (state === sdk.SyncState.Prepared) {
          client.off(sdk.ClientEvent.Sync, onSync);
          resolve();
        } else if (state === sdk.SyncState.Error && !previous) {
          client.off(sdk.ClientEvent.Sync, onSync);
          reject(data?.error ?? new Error("first sync failed"));
        }
      };
      client.on(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 20 });
    await prepared;
    live = true;
    return { user_id: response.user_id, device_id: response.device_id };
  },

  async bootstrap_cross_signing({ reset = false } = {}) {
    const client = requireClient();
    const crypto = requireCrypto();
    await crypto.bootstrapCrossSigning({
      // reset: new keys although some exist (Element's "reset cryptographic identity").
      setupNewCrossSigning: reset,
      authUploadDeviceSigningKeys: async (makeRequest) => {
        // Synapse lets a user's first cross-signing keys through without
        // auth; otherwise it answers 401 with the flows and a session.
        try {
          return await makeRequest(null);
        } catch (error) {
          if (!(error instanceof sdk.MatrixError) || error.httpStatus !== 401 || !error.data?.flows) throw error;
          log.info("the cross-signing upload needs auth: answering with the password");
          return await makeRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: client.getUserId() },
            password,
            session: error.data.session,
          });
        }
      },
    });
    // The SDK signs our device locally, but reports it signed only once a
    // keys query returned the uploaded signature (after the next sync says
    // our device list changed): wait for that, so the answer means "others
    // can see it too". The answer still tells if it never happened.
    await waitUntil(
      async () => (await crypto.getDeviceVerificationStatus(client.getUserId(), client.getDeviceId()))?.signedByOwner,
      "our device's cross-signing signature to come back from the server",
      10_000,
    ).catch((error) => log.warn(error.message));
    return await ownStatus();
  },

  async bootstrap_secret_storage() {
    const crypto = requireCrypto();
    // Element makes the cross-signing keys first, then secret storage to keep them in.
    if (!(await crypto.isCrossSigningReady())) await ops.bootstrap_cross_signing({});
    const recovery = await crypto.createRecoveryKeyFromPassphrase();
    await crypto.bootstrapSecretStorage({
      createSecretStorageKey: async () => recovery,
      setupNewSecretStorage: true,
    });
    const status = await crypto.getSecretStorageStatus();
    return {
      recovery_key: recovery.encodedPrivateKey,
      key_id: status.defaultKeyId,
      ready: status.ready,
      secrets: status.secretStorageKeyValidityMap,
    };
  },

  async set_isolation({ mode }) {
    const isolation = {
      only_signed: () => new cryptoApi.OnlySignedDevicesIsolationMode(),
      // false: do not refuse to send to a verified user with an unverified
      // device, as Element's legacy mode does by default.
      all: () => new cryptoApi.AllDevicesIsolationMode(false),
    }[mode];
    if (!isolation) throw new Error(`unknown isolation mode ${JSON.stringify(mode)}: only_signed or all`);
    requireCrypto().setDeviceIsolationMode(isolation());
    return { mode };
  },

  async create_room({ name, invite = [], encrypted = true }) {
    const client = requireClient();
    const { room_id: roomId } = await client.createRoom({
      name: name ?? "readybot test (Element)",
      preset: sdk.Preset.PrivateChat,
      visibility: sdk.Visibility.Private,
      invite,
      initial_state: encrypted ? [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }] : [],
    });
    // Sending before the sync shows the room's encryption state would send
    // the first message in the clear.
    await waitUntil(
      async () =>
        membership(roomId, client.getUserId()) === "join" &&
        (!encrypted || (await requireCrypto().isEncryptionEnabledInRoom(roomId))),
      `the new room ${roomId} in the sync`,
    );
    return { room_id: roomId };
  },

  async join({ room_id: roomId }) {
    const client = requireClient();
    await client.joinRoom(roomId);
    await waitUntil(() => membership(roomId, client.getUserId()) === "join", `our join to ${roomId} in the sync`);
    return { room_id: roomId };
  },

  async wait_joined({ room_id: roomId, user_id: userId, timeout_ms: timeoutMs }) {
    await waitUntil(() => membership(roomId, userId) === "join", `${userId} joined to ${roomId}`, timeoutMs);
    return {};
  },

  async send_text({ room_id: roomId, body, msgtype = "m.text" }) {
    // Encrypted by the SDK when the room is (as Element does).
    const { event_id: eventId } = await requireClient().sendMessage(roomId, { msgtype, body });
    return { event_id: eventId };
  },

  async react({ room_id: roomId, event_id: eventId, key }) {
    const { event_id: reactionId } = await requireClient().sendEvent(roomId, sdk.EventType.Reaction, {
      "m.relates_to": { rel_type: sdk.RelationType.Annotation, event_id: eventId, key },
    });
    return { event_id: reactionId };
  },

  async user_cross_signed({ user_id: userId }) {
    const crypto = requireCrypto();
    const hasKeys = await crypto.userHasCrossSigningKeys(userId, true);
    const status = await crypto.getUserVerificationStatus(userId);
    return {
      has_cross_signing_keys: hasKeys,
      known: status.known,
      verified: status.isCrossSigningVerified(),
      was_verified: status.wasCrossSigningVerified(),
      needs_user_approval: status.needsUserApproval,
    };
  },

  async device_info({ user_id: userId, device_id: deviceId }) {
    const crypto = requireCrypto();
    // Download the user's devices if we do not track them yet (a stranger).
    const devices = await crypto.getUserDeviceInfo([userId], true);
    const device = devices.get(userId)?.get(deviceId);
    const status = await crypto.getDeviceVerificationStatus(userId, deviceId);
    if (!device || status === null) return { known: false };
    return {
      known: true,
      display_name: device.displayName ?? null,
      curve25519: device.getIdentityKey() ?? null,
      ed25519: device.getFingerprint() ?? null,
      signed_by_owner: status.signedByOwner,
      cross_signing_verified: status.crossSigningVerified,
      locally_verified: status.localVerified,
      verified: status.isVerified(),
    };
  },

  async account_data({ type }) {
    // From the server, not the sync cache: what another device of ours would find.
    const content = await requireClient().getAccountDataFromServer(type);
    return { content };
  },

  async own_status() {
    return await ownStatus();
  },

  async stop() {
    await shutdown();
    return {};
  },
};

async function ownStatus() {
  const client = requireClient();
  const crypto = requireCrypto();
  const device = await crypto.getDeviceVerificationStatus(client.getUserId(), client.getDeviceId());
  const status = await crypto.getCrossSigningStatus();
  return {
    cross_signing_ready: await crypto.isCrossSigningReady(),
    device_signed_by_owner: device?.signedByOwner ?? false,
    device_cross_signing_verified: device?.crossSigningVerified ?? false,
    public_keys_on_device: status.publicKeysOnDevice,
    private_keys_cached: status.privateKeysCachedLocally,
  };
}

let stopping = null;

function shutdown() {
  stopping ??= (async () => {
    live = false;
    if (client !== null) {
      client.stopClient();
      await reportChain;
    }
  })();
  return stopping;
}

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    write({ id: null, ok: false, error: `not JSON: ${describeError(error)}` });
    return;
  }
  const { id, op, ...args } = request;
  const operation = Object.hasOwn(ops, op) ? ops[op] : null;
  if (operation === null) {
    write({ id, ok: false, error: `unknown op ${JSON.stringify(op)}` });
    return;
  }
  const started = Date.now();
  try {
    const answer = await operation(args);
    log.info(`${op} done in ${Date.now() - started} ms`);
    write({ id, ok: true, ...answer });
  } catch (error) {
    log.warn(`${op} failed after ${Date.now() - started} ms:`, error);
    write({ id, ok: false, error: describeError(error) });
  }
  if (op === "stop") process.exit(0);
}

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
// Requests run concurrently: the answers carry the id they answer.
input.on("line", (line) => {
  if (line.trim()) void handle(line);
});
// The test runner went away: stop syncing and exit rather than linger.
input.on("close", () => {
  void shutdown().finally(() => process.exit(0));
});
process.on("unhandledRejection", (error) => log.error("unhandled rejection:", error));
