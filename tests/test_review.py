"""The expert-review loop: label overrides in the catalogue, applied by ingestion,
Transform and validation; the review's choice of images; the review page in Chromium.

The browser test drives Debian's chromium through chromium-driver with selenium, as
tests/test_viewer.py does, and skips where they are absent.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from components import transform
from components.catalogue import (
    OVERRIDE_COLUMNS,
    Catalogue,
    CatalogueError,
    load_catalogue,
)
from components.ingestion import beam_stages, tfexample
from components.ingestion.driver import input_fingerprint
from components.ingestion.report import read_quarantine, read_summary
from components.names import (
    CLASS_IDS,
    CLASS_NAMES,
    IMAGE_ID_KEY,
    INSTITUTION_KEY,
    LABEL_SOURCE_KEY,
    NATIVE_LABEL_KEY,
    OVERRIDE_CLASS_KEY,
)
from components.readers import list_units, read_unit
from components.records import (
    DISPUTED_LABEL,
    OVERRIDE_MISSING_IMAGE,
    Record,
)
from components.tools.review.selection import cross_entropy, review_count, select
from components.tools.synth.writer import generate
from components.tools.validation import validate_data
from pipeline.cli import main
from schemas import SOURCES_DIR
from tests.scoring_fixtures import serving_dir  # noqa: F401  (fixture)

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


# ----------------------------------------------------------------------------- helpers


def write_overrides(catalogue_dir: Path, code: str, rows: list[dict[str, str]]) -> Path:
    folder = catalogue_dir / "overrides"
    folder.mkdir(exist_ok=True)
    path = folder / f"{code}.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OVERRIDE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({"reviewer": "ann", "note": "", "time": "2026-01-01T00:00:00Z",
                             "institution": code, **row})
    return path


def records_of(catalogue: Catalogue, data_dir: Path) -> dict[str, list[Record]]:
    """Institution -> its records, as the readers give them."""
    found: dict[str, list[Record]] = {}
    for source in catalogue:
        for unit in list_units(source, str(data_dir)):
            found.setdefault(source.code, []).extend(
                r for r in read_unit(source, str(data_dir), unit) if isinstance(r, Record))
    return found


def other_class(catalogue: Catalogue, record: Record) -> str:
    """A class the catalogue does not give ``record``'s native label."""
    current = catalogue.class_of(record.institution, record.native_label)
    return CLASS_NAMES[(current + 1) % len(CLASS_NAMES)]


def ingest(catalogue_dir: Path, data_dir: Path, uri: Path) -> list[dict]:
    """Run ingestion's Beam stages into ``uri``; the examples written, decoded."""
    catalogue = load_catalogue(catalogue_dir)
    config = beam_stages.IngestionConfig(catalogue, str(data_dir))
    units = beam_stages.list_work_units(catalogue, str(data_dir))
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam_stages.IngestImages(config, units) | beam_stages.WriteIngestion(
            str(uri))
    examples = []
    for path in sorted(uri.glob("Split-*/data_tfrecord-*.gz")):
        with beam.io.filesystems.FileSystems.open(str(path)) as handle:
            examples.extend(tfexample.decode_example(r) for r in tfexample.read_tfrecords(handle))
    return examples


def text(example: dict, key: str) -> str:
    return example[key][0].decode() if key in example else ""


def transformed_labels(examples: list[dict], catalogue_dir: Path) -> dict[str, int]:
    """Image id -> the label Transform's preprocessing_fn gives each example, the
    optional override feature parsed as sparse, as Transform parses it."""
    def dense(key):
        return tf.constant([[e[key][0]] for e in examples])

    overrides = [(i, text(e, OVERRIDE_CLASS_KEY)) for i, e in enumerate(examples)
                 if OVERRIDE_CLASS_KEY in e]
    sparse = tf.SparseTensor(
        indices=tf.constant([[i, 0] for i, _ in overrides] or np.zeros((0, 2)), tf.int64),
        values=tf.constant([c for _, c in overrides], tf.string),
        dense_shape=[len(examples), 1 if overrides else 0],
    )
    inputs = {key: dense(key) for key in transform.PASSTHROUGH_KEYS}
    inputs[OVERRIDE_CLASS_KEY] = sparse
    outputs = transform.preprocessing_fn(
        inputs, {transform.CATALOGUE_DIR_CONFIG: str(catalogue_dir)})
    labels = outputs["label"].numpy().reshape(-1)
    return {text(e, IMAGE_ID_KEY): int(label) for e, label in zip(examples, labels, strict=True)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("review-data") / "data"
    generate(out, 30, seed=3, scale=0.1, workers=1)
    return out


@pytest.fixture
def catalogue_dir(tmp_path: Path) -> Path:
    target = tmp_path / "sources"
    shutil.copytree(SOURCES_DIR, target, ignore=shutil.ignore_patterns("overrides"))
    return target


# ----------------------------------------------------------------------------- catalogue


def test_overrides_file_is_read_and_a_later_row_wins(catalogue_dir: Path):
    write_overrides(catalogue_dir, "GSK", [
        {"image_id": "GSK/a", "old_label": "clear", "new_class": "crystals"},
        {"image_id": "GSK/b", "old_label": "clear", "new_class": "dispute", "note": "blurred"},
        {"image_id": "GSK/a", "old_label": "clear", "new_class": "precipitate"},
    ])
    source = load_catalogue(catalogue_dir).get("GSK")
    assert set(source.overrides) == {"GSK/a", "GSK/b"}
    assert source.override_of("GSK/a").new_class == "precipitate"
    assert source.override_of("GSK/a").origin == "GSK.csv:4"
    assert source.override_of("GSK/b").disputed
    assert load_catalogue(catalogue_dir).get("BMS").overrides == {}


@pytest.mark.parametrize("row, message", [
    ({"image_id": "GSK/a", "old_label": "clear", "new_class": "crystal"},
     "GSK.csv: line 2: new_class 'crystal' is not one of"),
    ({"image_id": "", "old_label": "clear", "new_class": "clear"},
     "GSK.csv: line 2: image_id is empty"),
    ({"institution": "BMS", "image_id": "GSK/a", "old_label": "x", "new_class": "clear"},
     "GSK.csv: line 2: institution 'BMS' is not 'GSK'"),
])
def test_bad_override_rows_name_file_and_line(catalogue_dir: Path, row, message):
    write_overrides(catalogue_dir, "GSK", [row])
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(catalogue_dir)


def test_overrides_of_an_unknown_institution_or_without_columns_are_refused(catalogue_dir):
    (catalogue_dir / "overrides").mkdir()
    (catalogue_dir / "overrides" / "ACME.csv").write_text(",".join(OVERRIDE_COLUMNS) + "\n")
    with pytest.raises(CatalogueError, match=r"ACME.csv: overrides of 'ACME', which is not"):
        load_catalogue(catalogue_dir)
    (catalogue_dir / "overrides" / "ACME.csv").unlink()
    (catalogue_dir / "overrides" / "GSK.csv").write_text("image_id,new_class\nGSK/a,clear\n")
    with pytest.raises(CatalogueError, match=r"GSK.csv: line 1: the header lacks column"):
        load_catalogue(catalogue_dir)


def test_overrides_travel_with_a_catalogue_in_a_bucket(catalogue_dir):
    """gs:// on Vertex AI; TensorFlow's ram:// file system here."""
    import uuid

    from components.catalogue import local_catalogue

    write_overrides(catalogue_dir, "GSK", [
        {"image_id": "GSK/a", "old_label": "clear", "new_class": "crystals"}])
    bucket = f"ram://catalogue-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(f"{bucket}/overrides")
    for path in [*catalogue_dir.glob("*.yaml"), *catalogue_dir.glob("overrides/*.csv")]:
        tf.io.gfile.copy(str(path), f"{bucket}/{path.relative_to(catalogue_dir)}")
    with local_catalogue(bucket) as folder:
        assert load_catalogue(folder).get("GSK").override_of("GSK/a").new_class == "crystals"
    assert load_catalogue(bucket).get("GSK").override_of("GSK/a").new_class == "crystals"


# ----------------------------------------------------------------------------- ingestion


@pytest.fixture(scope="module")
def overridden(data_dir, tmp_path_factory):
    """The data ingested with overrides: two new classes (BMS, GSK), one dispute (GSK).

    Returns (catalogue folder, examples folder, examples, the three records)."""
    folder = tmp_path_factory.mktemp("overridden")
    catalogue_dir = folder / "sources"
    shutil.copytree(SOURCES_DIR, catalogue_dir, ignore=shutil.ignore_patterns("overrides"))
    catalogue = load_catalogue(catalogue_dir)
    found = records_of(catalogue, data_dir)
    bms, gsk = found["BMS"][0], found["GSK"][:2]
    write_overrides(catalogue_dir, "BMS", [
        {"image_id": bms.image_id, "old_label": bms.native_label,
         "new_class": other_class(catalogue, bms)}])
    write_overrides(catalogue_dir, "GSK", [
        {"image_id": gsk[0].image_id, "old_label": gsk[0].native_label,
         "new_class": other_class(catalogue, gsk[0])},
        {"image_id": gsk[1].image_id, "old_label": gsk[1].native_label,
         "new_class": "dispute", "note": "out of focus"}])
    examples = ingest(catalogue_dir, data_dir, folder / "examples")
    return catalogue_dir, folder / "examples", examples, (bms, *gsk)


def test_ingestion_applies_counts_and_records_overrides(data_dir, overridden):
    catalogue_dir, uri, examples, (bms, *gsk) = overridden
    catalogue = load_catalogue(catalogue_dir)
    found = records_of(catalogue, data_dir)
    by_id = {text(e, IMAGE_ID_KEY): e for e in examples}
    for record in (bms, gsk[0]):
        example = by_id[record.image_id]
        assert text(example, LABEL_SOURCE_KEY) == "override"
        assert text(example, OVERRIDE_CLASS_KEY) == other_class(catalogue, record)
        assert text(example, NATIVE_LABEL_KEY) == record.native_label  # kept as recorded
    others = [e for i, e in by_id.items() if i not in (bms.image_id, gsk[0].image_id)]
    assert others and all(text(e, LABEL_SOURCE_KEY) == "catalogue" for e in others)
    assert all(OVERRIDE_CLASS_KEY not in e for e in others)
    # The disputed image is left out, with its reason and the reviewer's note.
    assert gsk[1].image_id not in by_id
    [disputed] = [r for r in read_quarantine(str(uri))
                  if r["reason"] == DISPUTED_LABEL]
    assert disputed["path"] == gsk[1].path and "out of focus" in disputed["detail"]
    summary = read_summary(str(uri))
    assert dict(summary.overrides) == {
        f"BMS/{other_class(catalogue, bms)}": 1, f"GSK/{other_class(catalogue, gsk[0])}": 1}
    assert summary.per_reason[DISPUTED_LABEL] == 1
    assert summary.examples == len(examples) == sum(map(len, found.values())) - 1
    # Transform's label is the override's class; the others keep the catalogue's.
    labels = transformed_labels(examples, catalogue_dir)
    for record in (bms, gsk[0]):
        assert labels[record.image_id] == CLASS_IDS[other_class(catalogue, record)]
    for example in others:
        assert labels[text(example, IMAGE_ID_KEY)] == catalogue.class_of(
            text(example, INSTITUTION_KEY), text(example, NATIVE_LABEL_KEY))


def test_report_counts_overrides_of_the_evaluated_examples(overridden, tmp_path):
    """The report finds the Evaluator's examples through the run's ML Metadata."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    from components.tools.report.render import JSON, MARKDOWN, write_report
    from components.tools.report.results import EvaluationResults, SliceResult
    from pipeline.local import metadata_config

    catalogue_dir, uri, _, (bms, gsk, _disputed) = overridden
    catalogue = load_catalogue(catalogue_dir)
    run = tmp_path / "run"
    evaluation = run / "pipeline" / "marco" / "Evaluator" / "evaluation" / "9"
    evaluation.mkdir(parents=True)
    store = metadata_store.MetadataStore(metadata_config(run))
    examples_type = store.put_artifact_type(pb.ArtifactType(name="Examples"))
    evaluation_type = store.put_artifact_type(pb.ArtifactType(name="ModelEvaluation"))
    [examples_id, evaluation_id] = store.put_artifacts([
        pb.Artifact(type_id=examples_type, uri=str(uri)),
        pb.Artifact(type_id=evaluation_type, uri=str(evaluation))])
    [execution] = store.put_executions([pb.Execution(
        type_id=store.put_execution_type(pb.ExecutionType(name="Evaluator")))])

    def event(artifact: int, kind, key: str) -> pb.Event:
        path = pb.Event.Path(steps=[pb.Event.Path.Step(key=key), pb.Event.Path.Step(index=0)])
        return pb.Event(artifact_id=artifact, execution_id=execution, type=kind, path=path)

    store.put_events([event(examples_id, pb.Event.INPUT, "examples"),
                      event(evaluation_id, pb.Event.OUTPUT, "evaluation")])
    confusion = np.eye(4) * 5
    overall = SliceResult("overall", 20.0, 1.0, confusion)
    results = EvaluationResults(path=str(evaluation), overall=overall,
                                institutions={"BMS": overall}, blessed=True, failures=[])
    out = tmp_path / "report"
    write_report(results, out)
    expected = {"BMS": {other_class(catalogue, bms): 1}, "GSK": {other_class(catalogue, gsk): 1}}
    assert json.loads((out / JSON).read_text())["label_overrides"] == expected
    markdown = (out / MARKDOWN).read_text()
    assert "## Labels set by experts' overrides" in markdown
    row = ["0"] * 4
    row[CLASS_IDS[other_class(catalogue, bms)]] = "1"
    assert f"| BMS | {' | '.join(row)} | 1 |" in markdown
    # Results from elsewhere (no run folder): no such section.
    write_report(EvaluationResults(path="eval", overall=overall, institutions={},
                                   blessed=True, failures=[]), tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / JSON).read_text())["label_overrides"] is None


def test_transform_without_any_override_in_the_batch(catalogue_dir):
    inputs = {key: tf.constant([["GSK"], ["BMS"]]) for key in transform.PASSTHROUGH_KEYS}
    inputs[NATIVE_LABEL_KEY] = tf.constant([["crystals"], ["Clear"]])
    config = {transform.CATALOGUE_DIR_CONFIG: str(catalogue_dir)}
    empty = tf.SparseTensor(tf.zeros((0, 2), tf.int64), tf.constant([], tf.string), [2, 0])
    for override in (empty, None):
        batch = dict(inputs)
        if override is not None:
            batch[OVERRIDE_CLASS_KEY] = override
        labels = transform.preprocessing_fn(batch, config)["label"].numpy().reshape(-1)
        assert labels.tolist() == [CLASS_IDS["crystals"], CLASS_IDS["clear"]]
    # Traced as Transform traces it, the label keeps a known shape [batch, 1].
    specs = {key: tf.TensorSpec([None, 1], tf.string) for key in transform.PASSTHROUGH_KEYS}
    specs[OVERRIDE_CLASS_KEY] = tf.SparseTensorSpec([None, None], tf.string)
    traced = tf.function(lambda features: transform.preprocessing_fn(features, config),
                         autograph=False)
    label = traced.get_concrete_function(specs).structured_outputs["label"]
    assert label.shape.as_list() == [None, 1]


def test_validation_refuses_an_override_of_a_missing_image_by_name(data_dir, catalogue_dir):
    catalogue = load_catalogue(catalogue_dir)
    record = records_of(catalogue, data_dir)["HWMRI"][0]
    write_overrides(catalogue_dir, "HWMRI", [
        {"image_id": record.image_id, "old_label": "precipitate", "new_class": "clear"},
        {"image_id": "HWMRI/no-such-drop", "old_label": "clear", "new_class": "crystals"}])
    report = validate_data(load_catalogue(catalogue_dir), data_dir, check_images=False,
                           workers=1)
    [problem] = [p for p in report.problems if p.kind == OVERRIDE_MISSING_IMAGE]
    assert "'HWMRI/no-such-drop'" in problem.describe() and "HWMRI.csv:3" in problem.origin
    assert not report.ok
    # The other override names an image whose native label has changed: a warning.
    assert any("reviewed as 'precipitate'" in w for w in report.sources["HWMRI"].warnings) \
        == (record.native_label != "precipitate")
    result = CliRunner().invoke(main, ["sources", "validate", str(data_dir), "--catalogue",
                                       str(catalogue_dir), "--no-images"])
    assert result.exit_code != 0 and "HWMRI/no-such-drop" in result.output


def test_a_changed_override_changes_the_input_fingerprint(data_dir, catalogue_dir):
    def fingerprint() -> str:
        catalogue = load_catalogue(catalogue_dir)
        return input_fingerprint(catalogue, beam_stages.list_work_units(catalogue,
                                                                         str(data_dir)))

    plain = fingerprint()
    assert fingerprint() == plain
    row = {"image_id": "GSK/x", "old_label": "clear", "new_class": "crystals"}
    write_overrides(catalogue_dir, "GSK", [row])
    once = fingerprint()
    assert once != plain
    write_overrides(catalogue_dir, "GSK", [{**row, "new_class": "precipitate"}])
    assert fingerprint() not in (plain, once)


# ----------------------------------------------------------------------------- selection


def test_selection_takes_the_highest_cross_entropy_on_the_stored_label():
    probabilities = np.array([
        [0.7, 0.1, 0.1, 0.1],   # label 0: confident and right
        [0.1, 0.1, 0.1, 0.7],   # label 0: confident and wrong
        [0.25, 0.25, 0.25, 0.25],
        [0.0, 1.0, 0.0, 0.0],   # label 2: certain of another class
        [0.4, 0.3, 0.2, 0.1],
    ])
    labels = np.array([0, 0, 2, 2, 1])
    losses = cross_entropy(probabilities, labels)
    assert np.allclose(losses[:3], -np.log([0.7, 0.1, 0.25]))
    assert np.isfinite(losses[3]) and losses[3] > losses[1]
    keys = [f"id{i}" for i in range(5)]
    assert select(losses, keys, 0.4) == [3, 1]
    assert select(losses, keys, 0.01) == [3]
    assert select(losses, keys, 1.0) == [3, 1, 2, 4, 0]
    assert select([1.0, 1.0], ["b", "a"], 1.0) == [1, 0]
    assert review_count(1000, 0.05) == 50 and review_count(0, 0.05) == 0
    with pytest.raises(ValueError, match="fraction"):
        review_count(10, 0)


# ----------------------------------------------------------------------------- round trip


@pytest.fixture
def download_browser(tmp_path: Path):
    """Headless Chromium that saves downloads into ``tmp_path / "downloads"``."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (./bootstrap.sh installs "
                    "Debian's chromium and chromium-driver packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1300,1000"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "profile.default_content_setting_values.automatic_downloads": 1,
    })
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver, downloads
    driver.quit()


def review_data(site: Path) -> dict:
    text_ = (site / "data.js").read_text(encoding="utf-8")
    prefix = "window.MARCO_REVIEW_DATA = "
    assert text_.startswith(prefix)
    return json.loads(text_[len(prefix):].rstrip().rstrip(";"))


def wait_for_files(folder: Path, count: int, seconds: float = 15) -> list[Path]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = sorted(p for p in folder.iterdir() if p.suffix == ".csv")
        partial = [p for p in folder.iterdir() if p.suffix == ".crdownload"]
        if len(done) >= count and not partial:
            return done
        time.sleep(0.2)
    raise AssertionError(f"downloads: {sorted(p.name for p in folder.iterdir())}")


@pytest.mark.slow
def test_review_round_trip_in_chromium(download_browser, serving_dir, data_dir,  # noqa: F811
                                       catalogue_dir, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from components.tools.review.examples import score_examples
    from components.tools.scoring.model import load_scorer, resolve_model

    driver, downloads = download_browser
    catalogue = load_catalogue(catalogue_dir)
    first = tmp_path / "examples-1"
    ingest(catalogue_dir, data_dir, first)
    site = tmp_path / "review"
    result = CliRunner().invoke(main, [
        "review", str(tmp_path), "--examples", str(first), "--model", str(serving_dir),
        "--catalogue", str(catalogue_dir), "--fraction", "0.2", "--out", str(site)])
    assert result.exit_code == 0, result.output
    assert "review: 6 of 30 labelled images" in result.output

    # The page's images are the 20 % with the highest cross-entropy on the stored label.
    data = review_data(site)
    scorer = load_scorer(resolve_model(str(serving_dir)).path)
    images, probabilities, _ = score_examples(str(first), catalogue, scorer.score)
    losses = cross_entropy(probabilities, np.array([i.label for i in images]))
    ranked = sorted(zip(losses, [i.image_id for i in images], strict=True),
                    key=lambda pair: (-pair[0], pair[1]))
    assert [item["image_id"] for item in data["items"]] == [i for _, i in ranked[:6]]
    assert all((site / item["image"]).is_file() for item in data["items"])

    driver.get((site / "index.html").resolve().as_uri())
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.documentElement.dataset.ready") == "1")
    items = data["items"]
    changed = CLASS_NAMES[(CLASS_IDS[items[0]["label"]] + 1) % len(CLASS_NAMES)]
    kept = items[2]["label"]
    reviewer = driver.find_element(By.ID, "reviewer")
    reviewer.send_keys("Dr. Ann")
    reviewer.send_keys("\ue00c")  # Escape leaves the field; keys reach the page again
    ActionChains(driver).send_keys(str(CLASS_IDS[changed] + 1)).perform()  # item 1: a class
    ActionChains(driver).send_keys("n").perform()  # item 2: a note, then dispute
    driver.switch_to.active_element.send_keys('skin, or "precipitate"?')
    ActionChains(driver).send_keys("\ue00c").send_keys("0").perform()
    ActionChains(driver).send_keys(str(CLASS_IDS[kept] + 1)).perform()  # item 3: confirmed
    assert driver.find_element(By.ID, "progress").text == "3 of 6 decided, 2 overrides"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "review-page.png"))
    ActionChains(driver).send_keys("e").perform()

    institutions = sorted({items[0]["institution"], items[1]["institution"]})
    files = wait_for_files(downloads, len(institutions))
    assert [f.name for f in files] == [f"{code}.csv" for code in institutions]
    overrides = catalogue_dir / "overrides"
    overrides.mkdir()
    for path in files:
        shutil.copyfile(path, overrides / path.name)
    assert all(f.read_text(encoding="utf-8").splitlines()[0] == ",".join(OVERRIDE_COLUMNS)
               for f in files)
    rows = [r for f in files for r in csv.DictReader(f.open(encoding="utf-8"))]
    by_id = {r["image_id"]: r for r in rows}
    assert set(by_id) == {items[0]["image_id"], items[1]["image_id"]}
    assert by_id[items[0]["image_id"]]["new_class"] == changed
    assert by_id[items[0]["image_id"]]["old_label"] == items[0]["old_label"]
    assert by_id[items[1]["image_id"]]["new_class"] == "dispute"
    assert by_id[items[1]["image_id"]]["note"] == 'skin, or "precipitate"?'
    assert {r["reviewer"] for r in rows} == {"Dr. Ann"}

    # The next ingestion uses the override, counts it, and leaves the disputed image out.
    second = tmp_path / "examples-2"
    examples = ingest(catalogue_dir, data_dir, second)
    example = next(e for e in examples if text(e, IMAGE_ID_KEY) == items[0]["image_id"])
    assert text(example, LABEL_SOURCE_KEY) == "override"
    assert transformed_labels(examples, catalogue_dir)[items[0]["image_id"]] == CLASS_IDS[changed]
    assert items[1]["image_id"] not in {text(e, IMAGE_ID_KEY) for e in examples}
    summary = read_summary(str(second))
    assert dict(summary.overrides) == {f"{items[0]['institution']}/{changed}": 1}
    assert summary.per_reason == {DISPUTED_LABEL: 1}
