"""Benchmark bookkeeping: ratios, repeats, FLOP fractions, the official host CutMix, report sections.

No wall-clock assertion: ``timed`` is replaced by a script of known durations wherever numbers matter.
"""
import warnings

import numpy as np
import pytest
import torch

import saol_core.bench as bench
from saol_core.cutmix import _randint, _uniform, cutmix, sample_beta


def test_summarize_median_min_max():
    s = bench.summarize([300.0, 100.0, 200.0, 400.0])
    assert (s.median, s.min, s.max) == (250.0, 100.0, 400.0)
    assert bench.summarize([5.0, 1.0, 3.0]).median == 3.0
    with pytest.raises(ValueError):
        bench.summarize([])


def test_cost_ratio_is_median_of_paired_time_ratios():
    assert bench.cost_ratio([80.0], [100.0]) == pytest.approx(1.25)   # 12.5 ms vs 10 ms per image
    # per repeat: 100/200, 100/50, 30/20 -> [0.5, 2.0, 1.5] -> median 1.5 (ratio of medians would be 1.0)
    assert bench.cost_ratio([200.0, 50.0, 20.0], [100.0, 100.0, 30.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        bench.cost_ratio([1.0, 2.0], [1.0])


def test_flop_fraction_known_numbers():
    # 0.25 GMACs x 2 FLOP x 3 passes x 100 img/s = 150 GFLOP/s of a 300 GFLOP/s peak
    assert bench.flop_fraction(0.25e9, 100.0, 300e9, passes=3) == pytest.approx(0.5)
    assert bench.flop_fraction(0.25e9, 100.0, 300e9, passes=1) == pytest.approx(1 / 6)


def test_recipe_configs_follow_the_paper():
    wrn = {r: bench.recipe_config("wrn40_2", r, batch_size=32) for r in bench.RECIPES}
    assert [wrn[r].loss.cutmix_prob for r in bench.RECIPES] == [0.0, 0.5, 0.0, 0.5, 0.5]
    assert (wrn["full"].loss.ss2_teacher_amp, wrn["full-step-teacher"].loss.ss2_teacher_amp) == ("auto", "step")
    assert bench.recipe_config("resnet110", "full", batch_size=32).loss.cutmix_prob == 1.0
    assert bench.recipe_config("wrn40_2", "full", batch_size=32, cutmix_prob=0.25).loss.cutmix_prob == 0.25
    full = wrn["full"]
    assert (full.model.heads, full.model.mask_head, full.loss.w_ss1, full.loss.w_ss2) == ("saol+gap", True, 1.0, 1.0)
    assert (wrn["gap"].model.heads, wrn["saol"].model.heads, wrn["saol"].loss.w_ss2) == ("gap", "saol+gap", 0.0)
    with pytest.raises(ValueError, match="choose one of"):
        bench.recipe_config("wrn40_2", "mixup", batch_size=32)


def _args(**kw):
    return bench.BenchSettings(**{**dict(batch_size=4, warmup=1, steps=1, repeats=3, e2e_images=32, workers=0), **kw})


def test_repeats_are_interleaved_and_summarized():
    """Scripted durations: warm-ups first (one per recipe), then repeat-major, recipe-minor."""
    recipes = ["gap", "gap+cutmix", "saol", "full"]
    warm = [99.0] * len(recipes)
    script = {"gap": [1.0, 2.0, 4.0], "gap+cutmix": [2.0, 2.0, 8.0], "saol": [1.0, 1.0, 1.0], "full": [4.0, 5.0, 6.0]}
    order = warm + [script[r][i] for i in range(3) for r in recipes]
    it = iter(order)

    def fake_timed(fn, device):
        fn()  # the real steps run (tiny), only the clock is scripted
        return next(it)
    rows = bench.bench_backbone("resnet20", recipes, _args(), torch.device("cpu"), clock=fake_timed)
    bench.add_fractions(rows, 1e9)
    assert next(it, None) is None
    by = {r.recipe: r for r in rows}
    for r in recipes:  # images/s = steps x batch / seconds
        assert by[r].ips.values == [1 * 4 / s for s in script[r]]
    assert by["gap"].ips.median == pytest.approx(4 / 2.0) and by["full"].ips.min == pytest.approx(4 / 6.0)
    assert by["gap+cutmix"].mixed == "3/3" and by["full"].mixed == "3/3" and by["saol"].mixed == "-"
    assert by["gap"].teacher == by["saol"].teacher == "-" and by["full"].teacher in ("bfloat16", "fp32")
    assert by["full"].macs > by["saol"].macs > by["gap"].macs == by["gap+cutmix"].macs
    assert by["gap"].fraction == pytest.approx(by["gap"].macs * 2 * 3 * 2.0 / 1e9)
    table = bench.rows_table(rows)
    full_line = next(line for line in table.splitlines() if "| full |" in line)
    # paired time ratios of full: vs gap [4, 2.5, 1.5] -> 2.5; vs gap+cutmix [2, 2.5, 0.75] -> 2.0
    assert "| 2.500 | 2.000 |" in full_line
    lines = bench.target_lines(rows, None)
    assert lines == ["- resnet20: saol / gap = 0.500 (target <= 1.1): met",
                     "- resnet20: full / gap+cutmix = 2.000 (target <= 1.35): MISSED"]


def test_eager_and_compiled_are_timed_side_by_side_and_compared(monkeypatch):
    """--eager-vs-compiled: each recipe also as '<recipe> compiled' (train.compile on), in the same interleaved
    repeats; compiled rows are compared with the compiled baseline, and a line says how much faster each
    compiled step is. torch.compile is recorded, not run: the wiring is under test, not inductor."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    recipes = ["gap", "full"]
    script = {"gap": [2.0, 2.0, 2.0], "full": [4.0, 4.0, 4.0], "gap compiled": [1.0, 2.0, 1.0],
              "full compiled": [3.0, 2.0, 4.0]}
    order = [99.0] * 4 + [script[r][i] for i in range(3) for r in ["gap", "full", "gap compiled", "full compiled"]]
    it = iter(order)

    def fake_timed(fn, device):
        fn()
        return next(it)
    rows = bench.bench_backbone("resnet20", recipes, _args(eager_vs_compiled=True), torch.device("cpu"),
                                clock=fake_timed)
    assert next(it, None) is None and [r.recipe for r in rows] == list(script)
    assert compiled, "the compiled rows ran without train.compile"
    full_line = next(line for line in bench.rows_table(rows).splitlines() if "| full compiled |" in line)
    assert "| 3.000 |" in full_line   # against gap compiled, not eager gap: paired time ratios [3, 1, 4]
    from saol_core.bench.report import compile_lines
    # paired time ratios eager / compiled: gap [2, 1, 2] -> 2.0; full [4/3, 2, 1] -> 4/3
    assert compile_lines(rows) == ["- resnet20: gap compiled / eager (train) = 2.000x faster",
                                   "- resnet20: full compiled / eager (train) = 1.333x faster"]


def _official_draws_of(seed, beta, B, H, W):
    """The numbers saol_core.cutmix draws from a generator seeded with ``seed`` (apply, lam0, cy, cx, perm)."""
    g = torch.Generator().manual_seed(seed)
    _uniform(g)
    lam0 = sample_beta(beta, g)
    cy, cx = _randint(H, g), _randint(W, g)
    return lam0, cy, cx, torch.randperm(B, generator=g)


@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (4, 2, 12, 20)])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_official_host_cutmix_matches_saol_cutmix_on_the_same_draws(shape, beta):
    B, C, H, W = shape
    images = torch.arange(B * C * H * W, dtype=torch.float32).reshape(shape)
    for seed in range(25):
        mix = cutmix(images, 1.0, beta, torch.Generator().manual_seed(seed))
        lam0, cy, cx, perm = _official_draws_of(seed, beta, B, H, W)
        host = images.clone()
        # official naming: its "W" is dim 2, so its cx is our row centre cy
        off = bench.official_paste(host, lam0, cx=cy, cy=cx, rand_index=perm)
        assert off.images is host  # in place, as in the official loop
        assert off.box == mix.box and off.lam == pytest.approx(mix.lam, abs=1e-12)
        assert torch.equal(off.perm, mix.perm) and torch.equal(host, mix.images)
        y0, y1, x0, x1 = off.box  # exactly the box changes in every image that got another's pixels
        box = torch.zeros(H, W, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        changed = (host != images).any(1)
        for b in range(B):
            assert torch.equal(changed[b], box if perm[b] != b else torch.zeros_like(box))
        assert off.lam == pytest.approx(1 - box.float().mean().item())


def test_official_cutmix_probability_and_numpy_draw_order():
    images = torch.randn(4, 3, 8, 8)
    skipped = bench.official_cutmix(images.clone(), 0.0, 1.0, np.random.RandomState(0))
    assert not skipped.applied and skipped.lam == 1.0 and skipped.perm is None
    rng, ref = np.random.RandomState(3), np.random.RandomState(3)
    torch.manual_seed(0)
    out = bench.official_cutmix(images.clone(), 1.0, 1.0, rng)
    ref.rand()
    lam0 = ref.beta(1.0, 1.0)
    torch.manual_seed(0)
    want = bench.official_paste(images.clone(), lam0, ref.randint(8), ref.randint(8), torch.randperm(4))
    assert out.box == want.box and out.lam == want.lam and torch.equal(out.images, want.images)


def test_pipelines_ratio_from_scripted_epochs():
    it = iter([50.0, 50.0, 2.0, 1.0, 4.0, 1.0, 1.0, 1.5])  # warm-ups, then (conventional, resident) x 3

    def fake_timed(fn, device):
        fn()
        return next(it)
    out = bench.bench_pipelines(_args(batch_size=16), torch.device("cpu"), clock=fake_timed)
    assert out["steps"] == 2 and out["images"] == 32 and out["augment"] == ["RandomCrop", "ToTensor", "Normalize"]
    assert out["ips"]["conventional"].values == [16.0, 8.0, 32.0]
    assert out["ips"]["resident"].values == [32.0, 32.0, 32.0 / 1.5]
    assert out["ratio"] == pytest.approx(32.0 / 16.0)


def test_official_loop_pipelines_alternate_and_compare_to_it():
    """Order per repeat: conventional, resident, official loop, resident (fp32) (bf16 only)."""
    it = iter([9.0] * 4 + [2.0, 1.0, 4.0, 2.0] + [2.0, 1.0, 2.0, 2.0] + [4.0, 1.0, 4.0, 1.0])

    def fake_timed(fn, device):
        fn()
        return next(it)
    with warnings.catch_warnings():  # bf16 on a CPU without native bf16 warns (emulated): not under test
        warnings.simplefilter("ignore", RuntimeWarning)
        out = bench.bench_pipelines(_args(batch_size=16, official_loop=True, bf16=True), torch.device("cpu"),
                                    clock=fake_timed)
    assert list(out["ips"]) == ["conventional", "resident", "official loop", "resident (fp32)"]
    assert out["ips"]["official loop"].values == [8.0, 16.0, 8.0]
    assert out["vs_official"]["resident"] == pytest.approx(32.0 / 8.0)
    assert out["vs_official"]["resident (fp32)"] == pytest.approx(16.0 / 8.0)
    assert out["precision"] == "bf16 autocast"
    section = bench.render_section("k", "cmd", _env(), {"workers": 0}, [], out)
    assert "the official loop (fp32) = 4.00x (goal >= 2.0x): met; at the same precision (fp32): 2.00x" in section
    assert "| the official loop: conventional data + its ResNet and step (fp32, NCHW) | 8 [8-16] | 0.50 | 1.00 |" in section


def test_official_loop_needs_a_cifar_resnet():
    with pytest.raises(ValueError, match="resnet20/32/44/56/110"):
        bench.bench_pipelines(_args(official_loop=True, conventional_backbone="wrn16_4"), torch.device("cpu"))


def _env():
    hw = {"cpu": "X", "cpu_count": 2, "torch_threads": 2}
    return {"hardware": hw, "device_label": "CPU X", "peak": {"peak": 1e9}, "peak_dtype": "float32",
            "date": "d", "load": (0.0, 0.0)}


def test_peer_resnet_is_ours_plus_projection_shortcuts():
    """Same widths and depth as this project's option-A ResNet; only the two 1x1-conv + BN shortcuts differ."""
    from saol_core.backbones import build_backbone
    from saol_core.bench.official import PeerResNet
    for depth in (20, 56):
        peer = PeerResNet(depth, 10)
        ours = sum(p.numel() for p in build_backbone(f"resnet{depth}").parameters()) + 64 * 10 + 10
        shortcuts = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
        assert sum(p.numel() for p in peer.parameters()) == ours + shortcuts
    assert sum(p.numel() for p in PeerResNet(20, 10).parameters()) == 272_474  # the usual "0.27 M"
    assert PeerResNet(20, 7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="6n"):
        PeerResNet(18, 10)


def test_official_step_loss_and_logged_errors():
    """lam * CE(y) + (1 - lam) * CE(y[perm]) from log-softmax by hand; errors from the ranked logits."""
    from saol_core.bench.official import OfficialStep
    torch.manual_seed(0)
    step = OfficialStep(20, 10, torch.device("cpu"))
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    mix = bench.official_cutmix(images.clone(), 1.0, 1.0, np.random.RandomState(3))
    before = [p.detach().clone() for p in step.model.parameters()]
    with torch.no_grad():
        logits = step.model.train()(mix.images)  # BN in train mode, as in the step (its running stats move too)
    logp = logits.double().log_softmax(1)
    want = -(mix.lam * logp[torch.arange(8), labels].mean() + (1 - mix.lam) * logp[torch.arange(8), labels[mix.perm]].mean())
    loss = step(mix.images, labels, mix)
    assert mix.applied and loss == pytest.approx(want.item(), rel=1e-5)
    rank = (logits > logits.gather(1, labels[:, None])).sum(1)  # classes ranked above the true one
    assert step.top1_err == pytest.approx(100 * (rank >= 1).float().mean().item())
    assert step.top5_err == pytest.approx(100 * (rank >= 5).float().mean().item())
    assert all(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()) if b.grad is not None)


def test_report_update_keeps_other_sections(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    mark = bench.MARK.format
    cpu = mark("CPU X | cmd a") + "\n## CPU X: `cmd a`\n\nold cpu table\n"
    gpu = mark("H100 | cmd b") + "\n## H100: `cmd b`\n\ngpu table | with | pipes\n"
    bench.update_report(path, "CPU X | cmd a", cpu)
    bench.update_report(path, "H100 | cmd b", gpu)
    text = path.read_text()
    assert text.startswith(bench.HEADER.rstrip()) and text.index("old cpu") < text.index("gpu table")
    new_cpu = mark("CPU X | cmd a") + "\n## CPU X: `cmd a`\n\nnew cpu table\n"
    text = bench.update_report(path, "CPU X | cmd a", new_cpu)
    assert "old cpu" not in text and text.count("new cpu table") == 1
    assert gpu in text and text.count(mark("CPU X | cmd a")) == 1
    path.write_text(text.replace("# Throughput benchmarks", "# Throughput benchmarks\n\nA hand-written note."))
    text = bench.update_report(path, "CPU X | other", mark("CPU X | other") + "\nthird\n")
    assert "A hand-written note." in text and gpu in text and new_cpu in text and text.endswith("third\n")


def test_peak_arithmetic():
    peak = bench.measure_peak(torch.device("cpu"), torch.float32, trials=2, clock=lambda fn, device: 0.5)
    assert peak["matmul"] == 2 * 2048**3 / 0.5
    assert peak["conv3x3"] == 2 * 64 * 256 * 256 * 9 * 16 * 16 / 0.5
    assert peak["peak"] == max(peak["matmul"], peak["conv3x3"])


def test_pipelines_on_an_image_folder_draw_e2e_images_per_epoch(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    epochs = []

    def counting_clock(fn, device):
        fn()
        epochs.append(1)
        return 1.0
    out = bench.bench_pipelines(_args(batch_size=4, e2e_images=10, e2e_repeats=1, e2e_data=str(tmp_path)),
                                torch.device("cpu"), clock=counting_clock)
    assert out["steps"] == 2 and out["images"] == 8 and out["data"] == tmp_path.name  # 10 // 4 batches of 4
    assert out["augment"] == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]  # the CIFAR recipe
    assert len(epochs) == 4 and out["ratio"] == pytest.approx(1.0)


@pytest.mark.slow
def test_concurrent_layouts_sum_the_runs(monkeypatch):
    from saol_core.bench import parallel
    assert parallel.parse_layout("2x1") == (2, 1)
    with pytest.raises(ValueError, match="<jobs>x<threads>"):
        parallel.parse_layout("two")
    settings = bench.BenchSettings(batch_size=4, steps=1, warmup=1, repeats=1)
    found = parallel.bench_layouts("resnet20", "gap", [(2, 1), (1, 1)], settings, rounds=1)
    two, one = found[(2, 1)], found[(1, 1)]
    assert len(two["per_run"].values) == 2 and two["aggregate"].median == pytest.approx(sum(two["per_run"].values))
    assert one["aggregate"].median == one["per_run"].median > 0
    table = parallel.layouts_table("resnet20", "gap", found)
    assert table.splitlines()[2].startswith("| resnet20 | gap | 2 x 1 |") and table.splitlines()[2].endswith("| 1.00 |")


def test_bench_with_a_params_file_takes_its_backbone(monkeypatch, capsys):
    """``--params`` without ``--backbones`` benches the file's own net (its output_stride may fit no other)."""
    import saol_core.bench.__main__ as cli
    benched = []

    def fake_backbone(backbone, recipes, settings, device, profiles):
        benched.append((backbone, settings.params))
        return []
    monkeypatch.setattr(cli, "bench_backbone", fake_backbone)
    monkeypatch.setattr(cli, "measure_peak", lambda device, dtype: {"peak": 1.0e12, "matmul_s": 1.0})
    from saol_core.study import ROOT
    path = str(ROOT / "params/wsol_cub50.yaml")
    cli.main(["--params", path, "--recipes", "gap", "--out", ""])
    assert benched == [("efficientnet_lite0", path)]
    cli.main(["--recipes", "gap", "--out", ""])
    assert [b for b, _ in benched[1:]] == ["wrn40_2", "resnet110"]
