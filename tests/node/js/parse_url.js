// Prints how Node's pg (pg-connection-string) reads a connection URL, as JSON on stdout.
// Usage: node parse_url.js CONNECTION_URL
"use strict";
const { parse } = require("pg-connection-string");

process.stdout.write(JSON.stringify(parse(process.argv[2])));
