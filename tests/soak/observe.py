"""What the checker reads: the clouds' own state, never the product's opinion of it.

- Compute: the emulator's ``/_emulator/state`` (every VM, its status, its group's action on it, its
  init's pid) and ``/_emulator/events``;
- the state and results buckets, read from fake-gcs-server itself, behind Cloud Storage's front: the
  front's limits and injected errors are for the product, and the checker must neither spend them
  nor be refused by them. Experiment records are downloaded again only when their generation moved;
- MLflow's REST API (runs by their tags); the Monitoring emulator's delivered alerts
  (``alerts.jsonl``); the trainer stand-in's per-boot markers (bench/trainer_like.py), with whether
  the process each names is still alive (pid and start time, so a reused pid is not mistaken for it).

Every read may fail while a fault is on (a service restarting): callers skip that tick's check.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from localcloud.procs import is_zombie, start_time
from sinergym_cloud import names

log = logging.getLogger("soak")


class Unreadable(Exception):
    """A source could not be read this time (a service restarting, a timeout)."""


class View:
    """The local cloud as the checker sees it."""

    def __init__(self, env: dict[str, str], ports: dict[str, int], state_dir: Path, markers: Path) -> None:
        self.compute = env["SINERGYM_COMPUTE_ENDPOINT"]
        self.gcs = f"http://127.0.0.1:{ports['gcs']}"  # fake-gcs-server itself, not the front
        self.mlflow = env["MLFLOW_TRACKING_URI"]
        self.state_bucket = env["SINERGYM_STATE_BUCKET"]
        self.results_bucket = env["SINERGYM_RESULTS_BUCKET"]
        self.project = env["GOOGLE_CLOUD_PROJECT"]
        self.alerts_file = state_dir / "monitoring" / "alerts.jsonl"
        self.markers_dir = markers
        self.local = threading.local()
        self._docs: dict[str, tuple[str, dict[str, Any]]] = {}  # object name -> (generation, document)
        self._lock = threading.Lock()

    @property
    def http(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        return session

    def _get(self, url: str, **params: Any) -> Any:
        try:
            response = self.http.get(url, params=params, timeout=15)
        except requests.RequestException as exc:
            raise Unreadable(f"{url}: {exc}") from exc
        if response.status_code != 200:
            raise Unreadable(f"{url}: HTTP {response.status_code}")
        return response.json()

    # ------------------------------------------------------------------ Compute
    def compute_state(self) -> dict[str, Any]:
        return dict(self._get(f"{self.compute}/_emulator/state"))

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        return list(self._get(f"{self.compute}/_emulator/events", since=since)["events"])

    def templates(self) -> list[str]:
        """The instance templates' names (an emulator route: not counted against Compute's rate quotas)."""
        return sorted(self._get(f"{self.compute}/_emulator/state").get("templates", []))

    # ---------------------------------------------------------------- buckets
    def objects(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        """Every object under ``prefix`` (name, generation, metadata, md5Hash, updated)."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"prefix": prefix, "maxResults": 1000, **({"pageToken": token} if token else {})}
            page = self._get(f"{self.gcs}/storage/v1/b/{bucket}/o", **params)
            items += page.get("items", [])
            token = page.get("nextPageToken")
            if not token:
                return items

    def download(self, bucket: str, name: str) -> bytes | None:
        url = f"{self.gcs}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
        try:
            response = self.http.get(url, params={"alt": "media"}, timeout=15)
        except requests.RequestException as exc:
            raise Unreadable(f"{name}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise Unreadable(f"{name}: HTTP {response.status_code}")
        return response.content

    def state_documents(self) -> dict[str, dict[str, Any]]:
        """Every JSON document under ``batches/`` in the state bucket, by object name; each is
        downloaded again only when its generation moved."""
        listed = self.objects(self.state_bucket, names.batch_prefix("").rstrip("/"))
        fresh: dict[str, tuple[str, dict[str, Any]]] = {}
        for item in listed:
            name, generation = item["name"], str(item.get("generation", ""))
            if not name.endswith(".json"):
                continue
            with self._lock:
                known = self._docs.get(name)
            if known is not None and known[0] == generation:
                fresh[name] = known
                continue
            raw = self.download(self.state_bucket, name)
            if raw is None:
                continue
            try:
                fresh[name] = (generation, json.loads(raw))
            except ValueError:
                continue  # caught mid-write: read it next time
        with self._lock:
            self._docs = fresh
        return {name: doc for name, (_, doc) in fresh.items()}

    def heartbeat(self, batch_id: str, experiment: str) -> float | None:
        """When the experiment's trainer last wrote its heartbeat (the object's update time), or None."""
        url = f"{self.gcs}/storage/v1/b/{self.results_bucket}/o/{quote(names.heartbeat_object(batch_id, experiment), safe='')}"
        try:
            response = self.http.get(url, timeout=15)
        except requests.RequestException as exc:
            raise Unreadable(f"heartbeat of {experiment}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise Unreadable(f"heartbeat of {experiment}: HTTP {response.status_code}")
        return dt.datetime.fromisoformat(response.json()["updated"].replace("Z", "+00:00")).timestamp()

    def active_batches(self) -> list[str]:
        return [
            o["name"].removeprefix(names.ACTIVE_PREFIX) for o in self.objects(self.state_bucket, names.ACTIVE_PREFIX)
        ]

    def output_problems(self, batch_id: str, experiment: str) -> list[str]:
        """What trainer.storage.verify_manifest finds wrong with an experiment's outputs (the
        product's own definition of outputs matching their manifest), read behind the front."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        from trainer.storage import verify_manifest

        client = getattr(self.local, "storage", None)
        if client is None:
            client = self.local.storage = storage.Client(
                project=self.project, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.gcs}
            )
        try:
            return verify_manifest(client.bucket(self.results_bucket), names.results_prefix(batch_id, experiment))
        except Exception as exc:
            raise Unreadable(f"outputs of {experiment}: {exc}") from exc

    # ----------------------------------------------------------------- MLflow
    def mlflow_runs(self, experiment_name: str, batch_id: str) -> list[dict[str, str]]:
        """The tags of every MLflow run of ``batch_id`` (runs of an experiment carry its index)."""
        api = f"{self.mlflow}/api/2.0/mlflow"
        try:
            got = self.http.get(
                f"{api}/experiments/get-by-name", params={"experiment_name": experiment_name}, timeout=15
            )
            if got.status_code == 404 or (got.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in got.text):
                return []
            if got.status_code != 200:
                raise Unreadable(f"mlflow experiment {experiment_name}: HTTP {got.status_code}")
            experiment_id = got.json()["experiment"]["experiment_id"]
            runs: list[dict[str, str]] = []
            token = None
            while True:
                body: dict[str, Any] = {"experiment_ids": [experiment_id], "filter": f"tags.batch_id = '{batch_id}'",
                                        "max_results": 1000, "run_view_type": "ALL"}  # fmt: skip
                if token:
                    body["page_token"] = token
                page = self.http.post(f"{api}/runs/search", json=body, timeout=15)
                if page.status_code != 200:
                    raise Unreadable(f"mlflow runs of {batch_id}: HTTP {page.status_code}")
                data = page.json()
                for run in data.get("runs", []):
                    tags = {t["key"]: t["value"] for t in run.get("data", {}).get("tags", [])}
                    tags["run_id"] = run["info"]["run_id"]
                    tags["status"] = run["info"].get("status", "")
                    runs.append(tags)
                token = data.get("next_page_token")
                if not token:
                    return runs
        except requests.RequestException as exc:
            raise Unreadable(f"mlflow: {exc}") from exc

    # --------------------------------------------------------- alerts, markers
    def alerts(self) -> list[dict[str, Any]]:
        try:
            lines = self.alerts_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line)["incident"])
            except (ValueError, KeyError):
                continue  # a line being written
        return out

    def markers(self) -> list[dict[str, Any]]:
        """Each trainer boot's marker, with ``alive``: its process still exists (stopped counts)."""
        found = []
        for path in sorted(self.markers_dir.glob("*.json")) if self.markers_dir.is_dir() else []:
            try:
                marker = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pid, start = int(marker.get("pid", 0)), marker.get("start")
            marker["alive"] = bool(pid) and start_time(pid) == start and not is_zombie(pid)
            found.append(marker)
        return found
