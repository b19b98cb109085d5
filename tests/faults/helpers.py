"""Small tools for the fault tests: a bounded load generator and a clock."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Load:
    """`clients` threads POSTing `body` to `url` until stopped; every answer is kept."""

    url: str
    body: dict
    clients: int
    # (t, status, the model version when 200 else the error text)
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.t0 = time.monotonic()
        for _ in range(self.clients):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                try:
                    resp = http.post(self.url, json=self.body)
                    ok = resp.status_code == 200  # keep the serving version, or the error
                    text = str(resp.json().get("model_version")) if ok else resp.text[:300]
                    row = (time.monotonic() - self.t0, resp.status_code, text)
                except httpx.HTTPError as exc:
                    row = (time.monotonic() - self.t0, 0, f"{type(exc).__name__}: {exc}")
                self.answers.append(row)
                if row[1] != 200:
                    time.sleep(0.05)  # a client backs off a little after an error

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        return self

    def errors(self, after: float = 0.0) -> list[tuple[float, int, str]]:
        return [a for a in self.answers if a[0] >= after and a[1] != 200]
