"""The warm-start options: answers that teach the format only, both formats at once, a frozen vision tower, and the
vision pretraining of the pipeline's base (skinflow.train.vision)."""

import pytest

from skinflow.data.records import load_jsonl
from skinflow.formats import parse_caption, parse_diagnoses
from skinflow.train import TrainConfig
from skinflow.train.runner import build_dataset, prepare
from skinflow.train.vision import GENERIC_FIELDS, pretrain_vision

from .conftest import FAST


def _config(data_file, tmp_path, **settings):
    return TrainConfig(stage="sft", data=str(data_file), out=str(tmp_path / "out"), max_steps=1, **{**FAST, **settings})


def _answers(dataset):
    return [row["completion"][0]["content"][0]["text"] for row in dataset]


def test_format_answers_keep_only_the_true_fields_and_list_k_distinct_labels(data_file, tmp_path):
    records = load_jsonl(data_file, progress=False)
    config = _config(data_file, tmp_path, sft_target="both", sft_answers="format", sft_true_fields=["color", "size"],
                     k=4)
    dataset = build_dataset(records, config)
    assert len(dataset) == 2 * len(records)
    captions = [parse_caption(text) for text in _answers(dataset) if text.startswith("color:")]
    diagnoses = [parse_diagnoses(text) for text in _answers(dataset) if text.startswith("1.")]
    assert len(captions) == len(diagnoses) == len(records)
    labels = {record["label"] for record in records}
    for ranked in diagnoses:
        assert len(ranked) == 4 and len(set(ranked)) == 4 and set(ranked) <= labels
    # shuffled together: the two halves interleave
    kinds = ["caption" if text.startswith("color:") else "diagnosis" for text in _answers(dataset)]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


def test_format_answers_of_the_true_fields_are_the_records_own(data_file, tmp_path):
    records = load_jsonl(data_file, progress=False)
    config = _config(data_file, tmp_path, sft_target="caption", sft_answers="format",
                     sft_true_fields=list(GENERIC_FIELDS))
    captions = [parse_caption(text) for text in _answers(build_dataset(records, config))]
    for record, caption in zip(records, captions):  # one target: rows in record order
        assert all(caption[name] == record["caption"][name] for name in GENERIC_FIELDS)
    truth = [parse_caption(text) for text in _answers(build_dataset(records, config.replace(sft_answers="truth")))]
    assert all(t[name] == r["caption"][name] for t, r in zip(truth, records) for name in ("lesion_type", "texture"))
    shuffled = sum(c["lesion_type"] != r["caption"]["lesion_type"] or c["texture"] != r["caption"]["texture"]
                   for c, r in zip(captions, records))
    assert shuffled > 0  # the other fields come from other records


def test_differential_answers_hold_the_label_at_every_rank(data_file, tmp_path):
    records = [{**record, "id": f"{record['id']}-{copy}"} for copy in range(8)
               for record in load_jsonl(data_file, progress=False)]
    config = _config(data_file, tmp_path, sft_target="diagnosis", sft_answers="format", sft_differential=True, k=3)
    ranks = []
    for record, text in zip(records, _answers(build_dataset(records, config))):
        ranked = parse_diagnoses(text)
        assert len(ranked) == 3 == len(set(ranked)) and record["label"] in ranked
        ranks.append(ranked.index(record["label"]))
    assert set(ranks) == {0, 1, 2}  # not always first: the ranking is not taught


def test_diagnosis_truth_answers_are_the_records_differential(data_file, tmp_path):
    from skinflow.train.runner import _similar_labels

    records = [{**record, "id": f"{record['id']}-{copy}"} for copy in range(8)
               for record in load_jsonl(data_file, progress=False)]
    similar = _similar_labels(records)
    config = _config(data_file, tmp_path, sft_target="diagnosis", sft_answers="format", sft_diagnosis_truth=0.5,
                     k=3)
    truths = 0
    for record, text in zip(records, _answers(build_dataset(records, config))):
        ranked = parse_diagnoses(text)
        assert len(ranked) == 3 == len(set(ranked))
        if ranked == [record["label"], *similar[record["label"]][:2]]:
            truths += 1
    assert 0.3 * len(records) < truths < 0.7 * len(records)
    everything = config.replace(sft_diagnosis_truth=1.0)
    assert all(parse_diagnoses(text)[0] == record["label"]
               for record, text in zip(records, _answers(build_dataset(records, everything))))


def test_similar_labels_rank_by_caption_overlap():
    from skinflow.train.runner import _similar_labels

    def record(label, color, shape):
        return {"label": label, "caption": {"color": color, "shape": shape}}

    records = [record("a", "red", "round"), record("b", "red", "round"), record("c", "red", "oval"),
               record("d", "blue", "oval"), record("a", "red", "oval")]
    similar = _similar_labels(records)
    # a: half red-round, half red-oval; b and c overlap it by 1.5 of 2 fields, d by 0.5
    assert similar["a"] == ["b", "c", "d"] and similar["d"] == ["c", "a", "b"]
    assert set(similar) == {"a", "b", "c", "d"}


def test_bad_warm_start_settings_are_named(data_file, tmp_path):
    with pytest.raises(ValueError, match="sft_answers"):
        _config(data_file, tmp_path, sft_answers="lies")
    with pytest.raises(ValueError, match=r"sft_true_fields\[1\]"):
        _config(data_file, tmp_path, sft_true_fields=["color", "colour"])
    with pytest.raises(ValueError, match="freeze_vision"):
        _config(data_file, tmp_path, freeze_vision="yes")
    with pytest.raises(ValueError, match="sft_diagnosis_truth"):
        _config(data_file, tmp_path, sft_diagnosis_truth=1.5)


def test_freeze_vision_leaves_only_the_merger_and_the_language_model_trainable(data_file, tmp_path):
    prepared = prepare(_config(data_file, tmp_path, freeze_vision=True, gradient_checkpointing=False),
                       progress=False, quiet=True)
    model = prepared.trainer.model
    visual = model.model.visual
    assert not any(p.requires_grad for p in visual.blocks.parameters())
    assert not any(p.requires_grad for p in visual.patch_embed.parameters())
    assert all(p.requires_grad for p in visual.merger.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())
    assert prepared.trainer.args.gradient_checkpointing is False


def test_pretrain_vision_learns_a_generic_field_and_touches_only_the_tower(data_file):
    import torch

    from skinflow.data.synthetic import generate
    from skinflow.model import tiny

    records = generate(96, seed=3, image_size=64, progress=False)
    model, processor = tiny.build(seed=0, dve=False, image_size=64)
    language = {name: p.detach().clone() for name, p in model.model.language_model.named_parameters()}
    tower = {name: p.detach().clone() for name, p in model.model.visual.named_parameters()}
    result = pretrain_vision(model, processor, records[:80], held_out=records[80:], fields=["location"], steps=60,
                             batch_size=16)
    assert all(torch.equal(p, language[name]) for name, p in model.model.language_model.named_parameters())
    assert any(not torch.equal(p, tower[name]) for name, p in model.model.visual.named_parameters())
    # the backdrop tells the location (4 kinds): far above the majority class after 60 steps
    assert result["held_out_accuracy"]["location"] > result["chance"]["location"] + 0.2
    with pytest.raises(ValueError, match="fields"):
        pretrain_vision(model, processor, records, fields=["colour"], steps=1)
