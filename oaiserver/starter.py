"""The commented configuration `oaiserver init` writes: a way to start after `pip install`,
away from the repository's own config.yaml.

Kept as code, not a data file, so every installation has it. Settings shown commented out
(`# key: value`) are valid as written once uncommented; tests load the file both ways.
"""

from __future__ import annotations

CONFIG_TEMPLATE = """\
# Configuration of an OAI-PMH repository and its harvester, written by `oaiserver init`.
# Every key is described in the README (Configuration). A relative path here (the SQLite
# file of storage.url, the seeds folder) is relative to the folder of this file.

repository:
  # repositoryName in Identify, and the title of the HTML pages.
  name: My OAI-PMH Repository
  # The URL harvesters use: baseURL in Identify and in every response. Behind a proxy,
  # set the public URL; `oaiserver serve` listens on its host and port when they are local.
  base_url: http://127.0.0.1:5000/oai
  # adminEmail in Identify: one address or a list.
  admin_emails: [admin@example.org]
  # repositoryIdentifier: a domain name you control; records are oai:<identifier>:<name>.
  identifier: repository.example.org
  # Free text shown in Identify and on the home page.
  description: ""
  # dc:publisher of the records made from seed documents (default: the name above).
  # publisher: My Institution

storage:
  # SQLAlchemy URL of the record store the server and the harvester share ($OAI_STORAGE_URL
  # overrides it). SQLite by default; for PostgreSQL install the `postgres` extra and write
  # postgresql://user:password@host:5432/dbname (the password is never printed).
  url: sqlite:///data/oai.sqlite3

server:
  # Records per ListRecords/ListIdentifiers page, and sets per ListSets page.
  page_size: 500
  sets_page_size: 100
  # Seconds a resumption token stays valid.
  token_lifetime: 86400
  # List requests one process answers at once; more get HTTP 503 with Retry-After (seconds).
  max_concurrent_lists: 16
  retry_after: 5
  # Seconds a client has to send a whole request before it is answered 408 and closed.
  request_timeout: 20
  # Reverse proxies in front of the server (addresses or CIDR networks): only their
  # X-Forwarded-For is believed, so the log names the real client. None by default.
  # trusted_proxies: [127.0.0.1, 10.0.0.0/8]
  # The key that signs resumption tokens. Leave it unset: one is generated once and kept in
  # the store ($OAI_SECRET overrides it). Set it when several stores must accept one token.
  # secret: a-long-random-string

# Folder of seed documents (.txt) that `oaiserver ingest` reads when given no PATH.
seeds: seeds

# Sets: each record whose `field` matches the regular expression `pattern` is in the set.
# sets:
#   - spec: reports
#     name: Reports
#     description: Documents whose title says they are a report.
#     match: {field: title, pattern: "\\\\breport\\\\b"}

# Partner repositories that `harvester run` and `harvester schedule` harvest into the store.
# partners:
#   - name: example
#     base_url: https://oai.example.org/oai
#     metadata_prefix: oai_dc
#     sets: [physics]
#     schedule: {interval: {hours: 6}}
#     republish: true
#     from: 2020-01-01
#     quirks: {lenient_xml: false}
#     max_page_mb: 6
#     allow_redirects_to: [https://mirror.example.org]
#     # Connection settings (the password is read from the environment variable, never from
#     # here). mode is checked when the file loads, not used yet. deletion_sweep: records the
#     # partner no longer lists become tombstones; a larger drop than max_drop waits for a person.
#     request_interval: 0
#     timeout: 60
#     retries: 5
#     headers: {From: ops@example.org}
#     auth: {username: harvester, password_env: EXAMPLE_OAI_PASSWORD}
#     mode: auto
#     deletion_sweep: {interval: {days: 7}, max_drop: 0.15}

# The harvester across partners: partners harvested at once, requests at once to one host,
# and the User-Agent it sends.
# harvester:
#   jobs: 4
#   per_host: 2
#   user_agent: "oai-repository-harvester (OAI-PMH 2.0; mailto:admin@example.org)"
"""
