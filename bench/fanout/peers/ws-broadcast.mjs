// Peer: a plain Node `ws` broadcast server. POST /publish takes a JSON event, serializes
// it once and sends it to every connected WebSocket.
//
//   node ws-broadcast.mjs <port>

import http from "node:http";
import { WebSocketServer } from "ws";

const port = Number(process.argv[2] ?? 3101);
const server = http.createServer((request, response) => {
  if (request.method === "POST" && request.url === "/publish") {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const message = JSON.stringify(JSON.parse(body));
      for (const client of wss.clients) client.send(message);
      response.writeHead(201).end();
    });
    return;
  }
  response.writeHead(request.url === "/healthz" ? 200 : 404).end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
server.listen(port, "127.0.0.1");
