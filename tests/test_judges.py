"""The learned judges on tiny, randomly initialised BLIP and CLIP models built in code (no hub)."""

import copy

import numpy as np
import pytest
import torch

from minitune.evaluate import evaluate_pipeline
from minitune.judges import BlipVqaJudge, ClipScoreJudge, available_judges, make_scorer, noun_phrases, to_uint8_list, vqa_question
from minitune.testing import tiny_blip_vqa_judge, tiny_clipscore_judge
from minitune.toy.scoring import oracle_scorer

PROMPTS = ["a red book and a yellow vase", "a cat", "two red circles and a blue square",
           "a dog on the left of a car", "a green triangle", "three blue squares"]


@pytest.fixture(scope="module")
def blip():
    return tiny_blip_vqa_judge()


@pytest.fixture(scope="module")
def clip():
    return tiny_clipscore_judge()


@pytest.fixture(scope="module")
def images():
    return torch.rand(len(PROMPTS), 3, 40, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("prompt, phrases", [
    ("a red book and a yellow vase", ["a red book", "a yellow vase"]),
    ("A red book and a yellow vase.", ["a red book", "a yellow vase"]),
    ("a red circle left of a blue square", ["a red circle", "a blue square"]),
    ("a cat on the left of a dog", ["a cat", "a dog"]),
    ("a cat to the right of a dog", ["a cat", "a dog"]),
    ("The fluffy pillow was on top of the hard chair", ["the fluffy pillow", "the hard chair"]),
    ("a vase in front of a book", ["a vase", "a book"]),
    ("a man with a red hat", ["a man", "a red hat"]),
    ("a bathroom with green tile and a red shower curtain", ["a bathroom", "green tile", "a red shower curtain"]),
    ("a red apple, a green pear, and a blue cup", ["a red apple", "a green pear", "a blue cup"]),
    ("a bold, striking sunflower", ["a bold, striking sunflower"]),
    ("A black and white cat sits in a white sink.", ["a black and white cat", "a white sink"]),
    ("a red orange and a brown sheep", ["a red orange", "a brown sheep"]),
    ("three green triangles", ["three green triangles"]),
    ("two red circles and a blue square", ["two red circles", "a blue square"]),
    ("a photo of a cat", ["a photo", "a cat"]),
    ("a cup of tea", ["a cup of tea"]),
    ("there is a cat next to a dog", ["a cat", "a dog"]),
    ("a leather jacket a wooden chair", ["a leather jacket", "a wooden chair"]),
    ("on top of", ["on top of"]),
])
def test_noun_phrases(prompt, phrases):
    assert noun_phrases(prompt) == phrases


def test_noun_phrases_keeps_the_first_max_phrases_and_questions_end_in_a_question_mark():
    prompt = ", ".join(f"a {c} cup" for c in ["red", "green", "blue", "yellow", "cyan", "pink", "black", "white", "brown"])
    assert noun_phrases(prompt, 8) == noun_phrases(prompt)[:8] and len(noun_phrases(prompt)) == 9
    assert vqa_question("A red book (big)") == "a red book big?"


def _reference_p_yes(judge: BlipVqaJudge, image: np.ndarray, phrase: str) -> float:
    """T2I-CompBench's vqa_prob for one question, written out: [ENC] question, one decoder step after [DEC],
    softmax over the vocabulary, p(yes) / (p(yes) + p(no))."""
    tok, model = judge.processor.tokenizer, judge.model
    inputs = judge.processor(images=image, text=phrase + "?", return_tensors="pt")
    ids = inputs.input_ids.clone()
    ids[0, 0] = tok.convert_tokens_to_ids("[ENC]")
    with torch.no_grad():
        img = model.vision_model(pixel_values=inputs.pixel_values).last_hidden_state
        q = model.text_encoder(input_ids=ids, attention_mask=inputs.attention_mask, encoder_hidden_states=img).last_hidden_state
        start = torch.tensor([[tok.convert_tokens_to_ids("[DEC]")]])
        p = model.text_decoder(input_ids=start, encoder_hidden_states=q).logits[0, 0].softmax(-1)
    yes, no = p[tok.convert_tokens_to_ids("yes")], p[tok.convert_tokens_to_ids("no")]
    return float(yes / (yes + no))


def test_blip_vqa_score_is_the_product_of_each_phrases_yes_probability(blip, images):
    scores = blip(images, PROMPTS)["blip_vqa"]
    probs = blip.phrase_probs(images, PROMPTS)
    assert [len(p) for p in probs] == [len(noun_phrases(p)) for p in PROMPTS]
    pixels = to_uint8_list(images)
    for i, prompt in enumerate(PROMPTS):
        ref = [_reference_p_yes(blip, pixels[i], ph) for ph in noun_phrases(prompt)]
        np.testing.assert_allclose(probs[i], ref, atol=1e-5)
        np.testing.assert_allclose(scores[i], np.prod(ref), atol=1e-5)
    assert scores.shape == (len(PROMPTS),) and np.all((scores > 0) & (scores < 1))
    assert np.ptp(scores) > 0.05, "the tiny judge should tell images apart"


def test_blip_vqa_is_batch_invariant_and_deterministic(blip, images):
    batched = blip(images, PROMPTS)["blip_vqa"]
    one_by_one = np.concatenate([blip(images[i:i + 1], PROMPTS[i:i + 1])["blip_vqa"] for i in range(len(PROMPTS))])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    small_batches = BlipVqaJudge(blip.model, blip.processor, batch_size=4)(images, PROMPTS)["blip_vqa"]
    np.testing.assert_allclose(batched, small_batches, atol=1e-5)
    assert np.array_equal(batched, blip(images, PROMPTS)["blip_vqa"])
    np.testing.assert_array_equal(batched, tiny_blip_vqa_judge()(images, PROMPTS)["blip_vqa"])


def test_blip_vqa_questions_start_with_blips_enc_token(blip):
    assert blip.enc_id == blip.processor.tokenizer.convert_tokens_to_ids("[ENC]")
    assert blip.enc_id == blip.model.config.text_config.bos_token_id + 1


def test_clipscore_is_hessels_w_max_cos_0(clip, images):
    cos = clip.cosine(images, PROMPTS)
    with torch.no_grad():
        inputs = clip.processor(images=to_uint8_list(images), text=PROMPTS, padding=True, return_tensors="pt")
        out = clip.model(**inputs)
    np.testing.assert_allclose(cos, (out.image_embeds * out.text_embeds).sum(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(clip(images, PROMPTS)["clipscore"], 2.5 * np.maximum(cos, 0), atol=1e-12)
    assert np.ptp(cos) > 0.01 and (cos > 0).any()
    prefixed = ClipScoreJudge(clip.model, clip.processor, prefix="A photo depicts ").cosine(images, PROMPTS)
    assert not np.allclose(prefixed, cos)


def test_clipscore_is_batch_invariant_and_deterministic(clip, images):
    batched = clip.cosine(images, PROMPTS)
    one_by_one = np.concatenate([clip.cosine(images[i:i + 1], PROMPTS[i:i + 1]) for i in range(len(PROMPTS))])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(batched, ClipScoreJudge(clip.model, clip.processor, batch_size=4).cosine(images, PROMPTS),
                               atol=1e-5)
    np.testing.assert_array_equal(batched, tiny_clipscore_judge().cosine(images, PROMPTS))


def test_judges_accept_tuples_float64_and_an_empty_batch(blip, clip, images):
    for judge in (blip, clip):
        a = judge(images[:2], PROMPTS[:2])[judge.metric]
        np.testing.assert_allclose(judge(images[:2].double(), tuple(PROMPTS[:2]))[judge.metric], a, atol=1e-6)
        assert judge(images[:0], [])[judge.metric].shape == (0,)


def test_judges_run_in_their_models_dtype(blip, clip, images):
    """The inputs follow the model's parameters (as they would to a float16 model on an accelerator)."""
    double_blip = BlipVqaJudge(copy.deepcopy(blip.model).double(), blip.processor)
    np.testing.assert_allclose(double_blip(images, PROMPTS)["blip_vqa"], blip(images, PROMPTS)["blip_vqa"], atol=1e-5)
    double_clip = ClipScoreJudge(copy.deepcopy(clip.model).double(), clip.processor)
    np.testing.assert_allclose(double_clip.cosine(images, PROMPTS), clip.cosine(images, PROMPTS), atol=1e-5)


_BAD = {
    "an empty prompt": (lambda x: x[:2], ["a cat", ""], "non-empty string"),
    "a blank prompt": (lambda x: x[:2], ["a cat", "   "], "non-empty string"),
    "a prompt without words": (lambda x: x[:2], ["a cat", "?!"], "no words"),
    "a non-string prompt": (lambda x: x[:2], ["a cat", None], "non-empty string"),
    "too few prompts": (lambda x: x[:3], ["a cat", "a dog"], "3 images and 2 prompts"),
    "one string for all images": (lambda x: x[:2], "a cat", "a single string"),
    "images without a batch axis": (lambda x: x[0], ["a cat"], "shape"),
    "one-channel images": (lambda x: x[:2, :1], ["a cat", "a dog"], "shape"),
    "channels-last images": (lambda x: x[:2].permute(0, 2, 3, 1), ["a cat", "a dog"], "shape"),
    "uint8-range images": (lambda x: (x[:2] + 1) * 127.5, ["a cat", "a dog"], r"\[-1, 1\]"),
    "integer images": (lambda x: x[:2].round().long(), ["a cat", "a dog"], "floating-point"),
    "NaN images": (lambda x: x[:2] * float("nan"), ["a cat", "a dog"], "finite"),
    "a numpy array": (lambda x: x[:2].numpy(), ["a cat", "a dog"], "tensor"),
}


@pytest.mark.parametrize("judge_name", ["blip", "clip"])
@pytest.mark.parametrize("case", list(_BAD))
def test_bad_input_raises_one_clear_sentence(request, images, judge_name, case):
    judge = request.getfixturevalue(judge_name)
    make_images, prompts, match = _BAD[case]
    with pytest.raises(ValueError, match=match) as err:
        judge(make_images(images), prompts)
    msg = str(err.value)
    assert msg.endswith(".") and ". " not in msg and "\n" not in msg


def test_make_scorer_builds_each_judge_by_name():
    assert set(available_judges()) == {"oracle", "blip-vqa", "clipscore"}
    assert make_scorer("oracle") is oracle_scorer
    assert isinstance(make_scorer("blip-vqa", "cpu", model_id="tiny"), BlipVqaJudge)
    assert isinstance(make_scorer("clipscore", "cpu", model_id="tiny"), ClipScoreJudge)
    with pytest.raises(ValueError, match="choose one of oracle, blip-vqa, clipscore"):
        make_scorer("vqascore")
    with pytest.raises(ValueError, match="no model id"):
        make_scorer("oracle", model_id="tiny")


@pytest.mark.parametrize("name", ["blip", "clip"])
def test_from_pretrained_loads_a_saved_judge_from_a_folder(request, tmp_path, images, name):
    judge = request.getfixturevalue(name)
    judge.model.save_pretrained(tmp_path)
    judge.processor.save_pretrained(tmp_path)
    loaded = type(judge).from_pretrained(str(tmp_path), device="cpu")
    np.testing.assert_allclose(loaded(images, PROMPTS)[judge.metric], judge(images, PROMPTS)[judge.metric], atol=1e-6)
    scorer = make_scorer({"blip": "blip-vqa", "clip": "clipscore"}[name], "cpu", model_id=str(tmp_path))
    np.testing.assert_allclose(scorer(images, PROMPTS)[judge.metric], judge(images, PROMPTS)[judge.metric], atol=1e-6)


@pytest.mark.parametrize("name", ["blip-vqa", "clipscore"])
def test_a_folder_without_a_model_is_one_sentence(tmp_path, name):
    with pytest.raises(ValueError, match="Cannot load the .* judge from") as err:
        make_scorer(name, "cpu", model_id=str(tmp_path))
    assert str(err.value).endswith(".") and ". " not in str(err.value)


def test_evaluate_pipeline_takes_the_judges_as_scorers(toy, blip, clip):
    prompts = ["a red circle and a blue square", "three green triangles"]
    ev, cands = evaluate_pipeline(toy, prompts, 2, num_inference_steps=2, progress=False,
                                  scorers={"blip-vqa": blip, "clipscore": clip})
    assert ev.metrics == ["blip_vqa", "clipscore"]
    np.testing.assert_allclose([r["blip_vqa"] for r in ev.records], blip(cands.images, cands.prompts)["blip_vqa"], atol=1e-6)
    summary = ev.summary()["all"]
    assert 0 < summary["blip_vqa"] < 1 and summary["blip_vqa_ci"][0] <= summary["blip_vqa"] <= summary["blip_vqa_ci"][1]


def test_blip_vqa_uses_spacys_noun_chunks_where_installed_and_records_its_splitter(monkeypatch):
    """With spaCy and en_core_web_sm importable, phrases are their noun chunks (T2I-CompBench's); without, the rule-based
    splitter; the judge's record names which."""
    import sys
    import types

    from minitune.io import judge_record

    class Doc:
        def __init__(self, text):
            self.noun_chunks = [types.SimpleNamespace(text=t) for t in text.split(" and ")]

    monkeypatch.setitem(sys.modules, "spacy", None)  # not installed
    plain = tiny_blip_vqa_judge()
    assert plain.phrase_splitter == "rule-based" and judge_record(plain)["judge_phrases"] == "rule-based"
    spacy = types.SimpleNamespace(load=lambda name: Doc if name == "en_core_web_sm" else None)
    monkeypatch.setitem(sys.modules, "spacy", spacy)
    judge = tiny_blip_vqa_judge()
    assert judge.phrase_splitter == "spacy en_core_web_sm noun chunks"
    assert judge.phrases("a metallic stand display and a glass jar") == ["a metallic stand display", "a glass jar"]
    assert judge_record(judge)["judge_phrases"] == "spacy en_core_web_sm noun chunks"

    def missing(name):
        raise OSError(f"[E050] Can't find model '{name}'")

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=missing))  # spaCy without the model
    assert tiny_blip_vqa_judge().phrase_splitter == "rule-based"
