#!/usr/bin/env python3
"""A loopback telemetrics collector for the system test: answers every POST with 201 and
appends one JSON line per record (path, classification header, payload) to a file.

Usage: collector.py PORT OUTFILE"""
import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        line = {
            "path": self.path,
            "classification": self.headers.get("Classification"),
            "payload": body,
        }
        with open(sys.argv[2], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, fmt, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
