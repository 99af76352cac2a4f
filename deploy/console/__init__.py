"""The web console a nameserver serves (issue 19): read-only, live.

A nameserver with `[console] listen` set serves a small static page
(`static/`: HTML, JS, CSS; no CDN, works offline) and its data as JSON
under `/api/...`. The data comes from the same functions the `tailrace
group | topic` commands print (consumer/admin_ops.py, admin_view.py),
asked through the nameserver's own client port with the console's
profile, plus the nameserver's registry and controller in process.

- `config.py`: the `[console]` section;
- `history.py`: bounded time series (per-topic rates, per-group lag), plain logic;
- `collect.py`: what the cluster looks like now, refreshed by one thread;
- `server.py`: HTTP(S), the signed-request check, static files and `/api`.

It lives in deploy/, not nameserver/, because it is a client of the
brokers (the client library), which the nameserver package never imports.
"""
