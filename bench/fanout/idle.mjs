// Opens N WebSocket subscribers to one hub stream and holds them, idle.
//
//   node idle.mjs '{"base":"http://127.0.0.1:3001","stream":"idle","connections":10000}'
//
// With "deflate": true the clients offer permessage-deflate, as browsers do.
//
// Prints "ready <seconds>" once every connection is subscribed, then waits for stdin
// to close.

import http from "node:http";
import WebSocket from "ws";

const { base, stream, connections, deflate = false } = JSON.parse(process.argv[2]);
const wsBase = base.replace(/^http/, "ws");
const sockets = [];

function subscriber() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsBase}/ws`, { perMessageDeflate: deflate });
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.includes('"connection_ack"')) {
        ws.send(JSON.stringify({ type: "subscribe", streamId: stream, batch: true }));
      } else if (text.includes('"subscribed"')) {
        resolve(ws);
      } else if (text.includes('"error"')) {
        reject(new Error(text));
      }
    });
    ws.on("error", reject);
  });
}

async function main() {
  await new Promise((resolve, reject) => {
    const request = http.request(`${base}/api/streams`, {
      method: "POST",
      headers: { "content-type": "application/json" },
    }, (response) => response.resume().on("end", resolve));
    request.on("error", reject);
    request.end(JSON.stringify({ workflowSessionId: stream }));
  });
  const started = Date.now();
  for (let i = 0; i < connections; i += 200) {
    const batch = Math.min(200, connections - i);
    sockets.push(...(await Promise.all(Array.from({ length: batch }, subscriber))));
  }
  console.log(`ready ${(Date.now() - started) / 1000}`);
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
