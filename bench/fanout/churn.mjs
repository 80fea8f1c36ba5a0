// Clients joining and leaving a hub stream for the soak: `concurrent` WebSocket
// subscribers, each resuming from the newest seq it knows, staying `lifeMs`, then leaving.
//
//   node churn.mjs '{"base":"http://127.0.0.1:3001","stream":"soak","concurrent":50,"lifeMs":2000}'
//
// Runs until stdin closes; then prints {"sessions": n, "events": n} and exits.

import WebSocket from "ws";

const { base, stream, concurrent, lifeMs } = JSON.parse(process.argv[2]);
const wsBase = base.replace(/^http/, "ws");
let sessions = 0;
let events = 0;
let since = 0;
let stopping = false;

function session() {
  if (stopping) return;
  sessions++;
  const ws = new WebSocket(`${wsBase}/ws`, { perMessageDeflate: false, skipUTF8Validation: true });
  const timer = setTimeout(() => ws.close(), lifeMs * (0.5 + Math.random()));
  ws.on("message", (data) => {
    const text = data.toString();
    if (text.includes('"connection_ack"')) {
      ws.send(JSON.stringify({ type: "subscribe", streamId: stream, batch: true, since }));
      return;
    }
    const seqs = text.match(/"seq":\d+/g);
    if (seqs) {
      events += seqs.length;
      since = Math.max(since, +seqs[seqs.length - 1].slice(6));
    }
  });
  ws.on("close", () => {
    clearTimeout(timer);
    setTimeout(session, 10);
  });
  ws.on("error", () => {});
}

for (let i = 0; i < concurrent; i++) setTimeout(session, i * 20);
process.stdin.resume();
process.stdin.on("end", () => {
  stopping = true;
  console.log(JSON.stringify({ sessions, events }));
  process.exit(0);
});
