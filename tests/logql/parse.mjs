// Parse LogQL queries with Grafana's own grammar (@grafana/lezer-logql).
// stdin: a JSON array of query strings. stdout: a JSON array, one entry per query:
//   {"ok": true} or {"ok": false, "errors": [{"from": n, "to": n, "near": "..."}]}
// A lezer tree containing error nodes (the parser recovers, it never throws) is a failure.
import { parser } from "@grafana/lezer-logql";

function check(query) {
  if (typeof query !== "string" || query.trim() === "") {
    return { ok: false, errors: [{ from: 0, to: 0, near: "empty query" }] };
  }
  const errors = [];
  parser.parse(query).iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push({ from: node.from, to: node.to, near: query.slice(Math.max(0, node.from - 15), node.to + 15) });
      }
    },
  });
  return errors.length ? { ok: false, errors } : { ok: true };
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const queries = JSON.parse(Buffer.concat(chunks).toString("utf8"));
process.stdout.write(JSON.stringify(queries.map(check)) + "\n");
