// The Zajel load workload on Socket.IO 4.8 + @socket.io/redis-adapter 8.3, in WORKERS (2)
// processes of node's `cluster` module, as production would run it on 2 cores. Transport:
// WebSocket only, so no sticky sessions are needed (the primary hands each accepted
// connection to a worker, round-robin).
//
// Per connection: the user id from the handshake query (`?user=<uuid>`; registration and
// login are not what is measured), the socket joins the room `user:<id>`.
// Per message (`send` with an ack callback, `{conversation: "dm.<lo>.<hi>", body}`): friend
// check (`SISMEMBER friends:<me> <peer>`), store (`RPUSH conv:<conversation> <json>`, whose
// reply is the seq), ack with the stored message, then `io.to("user:<peer>").emit("message")`,
// which the Redis adapter publishes to the other worker. The same work as the bare relay's
// Redis store (benches/src/relay).
//
// Environment: PORT, HOST (127.0.0.1), REDIS_URL, WORKERS (2).
"use strict";

const cluster = require("node:cluster");
const crypto = require("node:crypto");
const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "127.0.0.1";
const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const WORKERS = Number(process.env.WORKERS || 2);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

if (cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill("SIGTERM");
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  cluster.on("exit", (worker, code, signal) => {
    if (stopping) return;
    console.error(`worker ${worker.process.pid} exited (${code ?? signal})`);
    stop();
  });
} else {
  worker().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

async function worker() {
  const store = createClient({ url: REDIS_URL });
  const pub = store.duplicate();
  const sub = store.duplicate();
  for (const c of [store, pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
  await Promise.all([store.connect(), pub.connect(), sub.connect()]);

  const server = http.createServer();
  const io = new Server(server, {
    transports: ["websocket"],
    serveClient: false,
    adapter: createAdapter(pub, sub),
  });

  io.use((socket, next) => {
    const user = socket.handshake.query.user;
    if (typeof user !== "string" || !UUID.test(user)) return next(new Error("user id required"));
    socket.data.user = user;
    next();
  });

  io.on("connection", (socket) => {
    const me = socket.data.user;
    socket.join(`user:${me}`);
    socket.on("send", async (frame, ack) => {
      if (typeof ack !== "function") return; // nobody to answer
      try {
        const conversation = frame && frame.conversation;
        const body = frame && frame.body;
        if (typeof conversation !== "string" || typeof body !== "string") {
          return ack({ error: "bad_request", message: "conversation and body required" });
        }
        const members = conversation.replace(/^dm\./, "").split(".");
        if (members.length !== 2 || !members.includes(me)) {
          return ack({ error: "not_member", message: "not your conversation" });
        }
        const peer = members[0] === me ? members[1] : members[0];
        if (!(await store.sIsMember(`friends:${me}`, peer))) {
          return ack({ error: "not_friends", message: "you can only message friends" });
        }
        const message = { id: crypto.randomUUID(), sender: me, body, sent_at: Date.now() };
        const seq = await store.rPush(`conv:${conversation}`, JSON.stringify(message));
        message.conversation = conversation;
        message.seq = seq;
        ack({ message });
        io.to(`user:${peer}`).emit("message", message);
      } catch (e) {
        ack({ error: "internal", message: String(e) });
      }
    });
  });

  server.listen(PORT, HOST, () => console.log(`worker ${process.pid} ready`));
}
