"""Fetching (folder, Orthanc REST and WADO-RS, S3), the decode-once cache, skip reasons, the patient split."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from training_synth import SynthSet, write_manifest

from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.synth import SynthConfig, generate, to_bytes
from dicomlab_training.cache import DecodeCache
from dicomlab_training.config import load_train_config
from dicomlab_training.data import prepare
from dicomlab_training.fetch import FolderFetcher, OrthancFetcher
from dicomlab_training.manifest import Sample, load_table
from dicomlab_training.pixels import SkipImage, SkipReason, decode


class FailingFetcher:
    def fetch(self, sample: Sample) -> bytes:
        raise AssertionError("the cache should not fetch anything")


def test_cache_decodes_once_and_matches_the_decoder(small_set: SynthSet, tmp_path: Path) -> None:
    table = load_table(str(small_set.manifest))
    cache = DecodeCache(tmp_path / "cache", 32)
    view = cache.build(table.samples, FolderFetcher(str(small_set.directory)), concurrency=4)
    assert view.decoded_now == len(table.samples) and view.skipped == {}
    assert view.images.shape == (len(table.samples), 32, 32) and view.images.dtype == np.uint8
    by_sop = {r["sop_uid"]: r for r in small_set.records}
    for i in (0, 5, len(table.samples) - 1):
        sample = table.samples[i]
        data = (small_set.directory / by_sop[sample.key]["path"]).read_bytes()
        expected = decode(data, 32, expected_sop_uid=sample.sop_uid).pixels
        np.testing.assert_allclose(view.images[view.rows[i]] / 255.0, expected, atol=0.5 / 255 + 1e-6)
    again = cache.build(table.samples, FailingFetcher())
    assert again.decoded_now == 0 and (again.rows == view.rows).all()
    other_size = DecodeCache(tmp_path / "cache", 24)
    assert other_size.key != cache.key  # another preprocessing never reuses these pixels


def test_unusable_instances_are_skipped_and_counted(small_set: SynthSet, tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    records = small_set.records[:6]
    for record in records:
        (folder / f"{record['sop_uid']}.dcm").write_bytes((small_set.directory / record["path"]).read_bytes())
    broken = dict(records[1], sop_uid="1.2.826.0.1.3680043.10.1.1")
    (folder / f"{broken['sop_uid']}.dcm").write_bytes(b"<html>502 Bad Gateway</html>")
    missing = dict(records[2], sop_uid="1.2.826.0.1.3680043.10.1.2")
    wrong = dict(records[3], sop_uid="1.2.826.0.1.3680043.10.1.3")  # file holds another instance
    (folder / f"{wrong['sop_uid']}.dcm").write_bytes((small_set.directory / records[4]["path"]).read_bytes())
    manifest = write_manifest([*records, broken, missing, wrong], tmp_path / "m.manifest")
    config = load_train_config(overrides={"manifest": str(manifest), "dicom_dir": str(folder), "pixels.size": 16,
                                          "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.0,
                                          "test_fraction": 0.0}, environ={})
    data = prepare(config)
    assert data.skipped == {"not_dicom": 1, "not_found": 1, "sop_uid_mismatch": 1}
    assert len(data.cache.usable) == 6 and len(data.split.train) == 6


def test_split_is_by_patient_deterministic_and_recorded(small_set: SynthSet, tmp_path: Path) -> None:
    config = load_train_config(overrides={"manifest": str(small_set.manifest), "dicom_dir": str(small_set.directory),
                                          "pixels.size": 16, "cache_dir": str(tmp_path / "cache"), "seed": 5,
                                          "val_fraction": 0.25, "test_fraction": 0.25}, environ={})
    first = prepare(config)
    again = prepare(config)
    other = prepare(dataclasses.replace(config, seed=6))
    assert first.split.record() == again.split.record() and first.split.record() != other.split.record()
    patients = first.cache.patients
    groups = [{patients[i] for i in part} for part in (first.split.train, first.split.val, first.split.test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert all(groups) and sum(len(g) for g in groups) == 16  # 16 synthetic patients
    record = first.split.record()
    assert record["unit"] == "patient" and sum(record["images"].values()) == len(small_set.records)
    assert not any(r["patient_id"] in json.dumps(record) for r in small_set.records)  # hashed, no PHI


def test_orthanc_rest_and_wado_rs(orthanc_client: OrthancClient) -> None:
    images = list(generate(SynthConfig(patients=2, rows=40, columns=40, seed=21, images_per_study=(1, 1),
                                       studies_per_patient=(1, 1))))
    ids = [str(orthanc_client.upload_instance(to_bytes(image.dataset))["ID"]) for image in images]
    fetcher = OrthancFetcher(orthanc_client)
    a, b = images
    by_id = Sample(key=a.sop_uid, source=ids[0], sop_uid=a.sop_uid, study_uid=None, series_uid=None)
    by_uids = Sample(key=b.sop_uid, source=ids[1], sop_uid=b.sop_uid, study_uid=b.study_uid, series_uid=b.series_uid)
    assert decode(fetcher.fetch(by_id), 16, expected_sop_uid=a.sop_uid).sop_uid == a.sop_uid
    assert decode(fetcher.fetch(by_uids), 16, expected_sop_uid=b.sop_uid).sop_uid == b.sop_uid
    swapped = Sample(key=b.sop_uid, source=ids[0], sop_uid=b.sop_uid, study_uid=None, series_uid=None)
    with pytest.raises(SkipImage) as mismatch:
        decode(fetcher.fetch(swapped), 16, expected_sop_uid=swapped.sop_uid)
    assert mismatch.value.reason is SkipReason.SOP_MISMATCH
    gone = Sample(key="x", source="00000000-00000000-00000000-00000000-00000000", sop_uid=None, study_uid=None,
                  series_uid=None)
    with pytest.raises(SkipImage) as missing:
        fetcher.fetch(gone)
    assert missing.value.reason is SkipReason.NOT_FOUND


def test_cache_shared_through_s3(small_set: SynthSet, s3_bucket: str, tmp_path: Path) -> None:
    table = load_table(str(small_set.manifest))
    first = DecodeCache(tmp_path / "node-a", 16, cache_url=f"{s3_bucket}/cache")
    built = first.build(table.samples[:10], FolderFetcher(str(small_set.directory)))
    second = DecodeCache(tmp_path / "node-b", 16, cache_url=f"{s3_bucket}/cache")
    pulled = second.build(table.samples[:10], FailingFetcher())
    assert pulled.decoded_now == 0
    np.testing.assert_array_equal(np.asarray(pulled.images), np.asarray(built.images))


def test_cache_built_in_shards_by_several_ranks_equals_one_build(small_set: SynthSet, tmp_path: Path) -> None:
    table = load_table(str(small_set.manifest))
    fetcher = FolderFetcher(str(small_set.directory))
    single = DecodeCache(tmp_path / "single", 32).build(table.samples, fetcher, concurrency=2)
    # a node already holding a few images (an earlier run), then 3 local ranks decode the rest, each its share
    sharded = DecodeCache(tmp_path / "sharded", 32)
    sharded.build(table.samples[:5], fetcher, concurrency=2)
    counts = [sharded.build_shard(table.samples, fetcher, rank, 3, concurrency=1) for rank in range(3)]
    assert sum(counts) == len(table.samples) - 5 and all(c > 0 for c in counts), counts
    merged = sharded.build(table.samples, FailingFetcher())  # local rank 0: merge only, nothing left to fetch
    assert merged.decoded_now == len(table.samples) - 5 and not (sharded.directory / "shards").exists()
    assert merged.skipped == single.skipped and (merged.rows >= 0).all()
    for i in range(len(table.samples)):
        np.testing.assert_array_equal(merged.images[merged.rows[i]], single.images[single.rows[i]])
    assert merged.patients == single.patients
    assert sharded.build_shard(table.samples, FailingFetcher(), 0, 3) == 0  # complete: nothing to decode
