"""Classifier guidance in DDPMCFGPipeline: the score form and the ancestral mean shift against loops written out by
hand with a classifier whose gradient is known, the same guidance whatever the model predicts, the gradient through
the classifier only, an unconditional UNet guided alone, bad input refused before any step, and the classifier saved
as a component that plain diffusers loads."""

import math
import os

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils.torch_utils import randn_tensor

from helpers import DATA_MEAN, tiny_classifier, tiny_conditional_unet
from hf_ddpm import DDPMClassifier2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.schedulers import DDIMScheduler, DDPMScheduler
from test_img2img import GaussianDenoiserUNet
from without_hf_ddpm import loads_without_hf_ddpm

NUM_CLASSES = 3
SIDE = DATA_MEAN.shape[-1]


class LinearClassifier(ModelMixin, ConfigMixin):
    """`logits = W x`, whatever the timestep: `grad_x log p(y | x) = W_y - sum_k p_k W_k`, known in closed form."""

    @register_to_config
    def __init__(self, sample_size: int = SIDE, in_channels: int = 1, num_classes: int = 3, num_train_timesteps=1000):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.weight = torch.nn.Parameter(torch.randn(num_classes, in_channels * sample_size**2, generator=generator))

    def forward(self, sample, timestep):
        return type("Output", (), {"logits": sample.flatten(1) @ self.weight.T})()

    def gradient(self, x, labels):
        probabilities = (x.flatten(1) @ self.weight.T).softmax(1)
        expected = probabilities @ self.weight
        return (self.weight[labels] - expected).reshape(x.shape).detach()


def gaussian_pipeline(scheduler, prediction_type="epsilon"):
    unet = GaussianDenoiserUNet(prediction_type=prediction_type)
    pipe = DDPMCFGPipeline(unet, scheduler, classifier=LinearClassifier(num_classes=NUM_CLASSES))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def start_noise(count=2):
    return randn_tensor((count, 1, SIDE, SIDE), generator=torch.Generator().manual_seed(0))


def test_ddim_guidance_is_the_score_form_written_out():
    scale, steps, labels = 3.0, 10, torch.tensor([0, 2])
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2")
    pipe = gaussian_pipeline(scheduler)
    out = pipe([0, 2], num_inference_steps=steps, classifier_scale=scale, latents=start_noise(), output_type="pt")

    reference = DDIMScheduler(beta_schedule="squaredcos_cap_v2")
    reference.set_timesteps(steps)
    x = start_noise()
    for t in reference.timesteps:
        alpha_bar = reference.alphas_cumprod[t]
        eps = pipe.unet(x, t).sample
        eps = eps - (1 - alpha_bar).sqrt() * scale * pipe.classifier.gradient(x, labels)
        x = reference.step(eps, t, x).prev_sample
    torch.testing.assert_close(out.images, (x / 2 + 0.5).clamp(0, 1))


def test_ddpm_guidance_shifts_the_ancestral_mean_by_scale_times_the_variance():
    scale, steps, labels = 2.0, 8, torch.tensor([1, 1])
    pipe = gaussian_pipeline(DDPMScheduler(beta_schedule="squaredcos_cap_v2"))
    generator = torch.Generator().manual_seed(5)
    out = pipe(
        [1],
        batch_size=2,
        num_inference_steps=steps,
        classifier_scale=scale,
        latents=start_noise(),
        generator=generator,
        output_type="pt",
    )

    reference = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    reference.set_timesteps(steps)
    generator, x = torch.Generator().manual_seed(5), start_noise()
    for t in reference.timesteps:
        previous = reference.previous_timestep(t)
        alpha_bar = reference.alphas_cumprod[t]
        alpha_bar_prev = reference.alphas_cumprod[previous] if previous >= 0 else torch.tensor(1.0)
        beta = 1 - alpha_bar / alpha_bar_prev
        posterior_variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
        gradient = pipe.classifier.gradient(x, labels)
        x = reference.step(pipe.unet(x, t).sample, t, x, generator=generator).prev_sample
        x = x + scale * posterior_variance * gradient
    torch.testing.assert_close(out.images, (x / 2 + 0.5).clamp(0, 1))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_the_guidance_is_the_same_whatever_the_model_predicts(prediction_type):
    """The same denoiser answering in another parameterisation samples the same guided images."""

    def sample(kind):
        pipe = gaussian_pipeline(DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=kind), kind)
        return pipe([2, 0], num_inference_steps=10, classifier_scale=4.0, latents=start_noise(), output_type="pt")

    torch.testing.assert_close(sample(prediction_type).images, sample("epsilon").images, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheduler_class", [DPMSolverMultistepScheduler, EulerDiscreteScheduler])
def test_every_sampler_moves_towards_the_class(scheduler_class):
    """Guided samples score higher for their class by the classifier than unguided ones from the same noise."""
    scheduler = scheduler_class(beta_schedule="squaredcos_cap_v2")
    pipe = gaussian_pipeline(scheduler)
    labels = [0, 1, 2]

    def log_probability(scale):
        images = pipe(labels, num_inference_steps=10, classifier_scale=scale, latents=start_noise(3), output_type="pt")
        logits = pipe.classifier(images.images * 2 - 1, 0).logits
        return logits.log_softmax(1)[range(3), labels]

    assert (log_probability(2.0) > log_probability(0.0)).all()


def test_scale_zero_does_not_run_the_classifier_and_matches_the_pipeline_without_one():
    calls = []
    pipe = gaussian_pipeline(DDIMScheduler())
    pipe.classifier.register_forward_hook(lambda *args: calls.append(1))
    plain = DDPMCFGPipeline(pipe.unet, DDIMScheduler())
    plain.set_progress_bar_config(disable=True)
    call = dict(batch_size=2, num_inference_steps=5, output_type="pt")
    out = pipe(latents=start_noise(), **call).images
    torch.testing.assert_close(out, plain(latents=start_noise(), **call).images)
    assert calls == []


def test_the_gradient_runs_through_the_classifier_only():
    unet = tiny_conditional_unet(num_class_embeds=NUM_CLASSES)
    grad_enabled_in_unet = []
    unet.register_forward_hook(lambda *args: grad_enabled_in_unet.append(torch.is_grad_enabled()))
    classifier = tiny_classifier()
    pipe = DDPMCFGPipeline(unet, DDIMScheduler(num_train_timesteps=20), classifier=classifier)
    pipe.set_progress_bar_config(disable=True)
    pipe([0, 2], guidance_scale=2.0, classifier_scale=1.0, num_inference_steps=4, generator=torch.manual_seed(0))
    assert grad_enabled_in_unet == [False] * 4
    assert all(parameter.grad is None for parameter in [*unet.parameters(), *classifier.parameters()])
    assert pipe.num_guided_steps == 4


def test_an_unconditional_unet_takes_the_class_names_of_its_classifier():
    classifier = tiny_classifier()
    classifier.register_to_config(id2label={"0": "Circle", "1": "Square", "2": "Star"})
    pipe = DDPMCFGPipeline(tiny_conditional_unet(None), DDIMScheduler(num_train_timesteps=20), classifier=classifier)
    assert pipe.config.id2label == {0: "Circle", 1: "Square", 2: "Star"}
    assert pipe._label_ids(["star", "Circle"]) == [2, 0]


def test_an_unconditional_unet_is_guided_by_the_classifier_alone_with_its_class_names():
    unet = tiny_conditional_unet(num_class_embeds=None)
    names = {0: "Circle", 1: "Square", 2: "Star"}
    pipe = DDPMCFGPipeline(unet, DDIMScheduler(num_train_timesteps=20), id2label=names, classifier=tiny_classifier())
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=4, generator=[torch.manual_seed(i) for i in range(2)], output_type="pt")
    guided = pipe(["Star", "circle"], classifier_scale=5.0, **call).images
    unguided = pipe(["Star", "circle"], **call).images
    assert guided.shape == (2, 1, 8, 8) and not torch.allclose(guided, unguided)
    with pytest.raises(ValueError, match="classifier-free guidance needs a class-conditional UNet"):
        pipe(["Star"], guidance_scale=2.0, num_inference_steps=4)


@pytest.mark.parametrize(
    "build, call, message",
    [
        (dict(classifier=dict(num_classes=4)), {}, "`classifier` has 4 classes but the model has 3 labels"),
        (dict(classifier=dict(sample_size=16)), {}, "`classifier` takes 1-channel images of 16 pixels"),
        (dict(classifier=dict(num_train_timesteps=1000)), {}, "noise schedule of 1000 timesteps"),
        (dict(), dict(classifier_scale=-1.0), "`classifier_scale` must be a finite number >= 0"),
        (dict(), dict(classifier_scale=math.nan), "`classifier_scale` must be a finite number >= 0"),
        (dict(), dict(classifier_scale="2"), "`classifier_scale` must be a number"),
        (dict(no_classifier=True), dict(classifier_scale=1.0), "needs a classifier: pass `classifier=`"),
        (dict(), dict(classifier_scale=1.0, class_labels=None), "needs `class_labels`"),
    ],
)
def test_bad_classifier_guidance_is_refused_before_any_step(build, call, message):
    unet = tiny_conditional_unet(num_class_embeds=NUM_CLASSES)
    steps = []
    unet.register_forward_hook(lambda *args: steps.append(1))
    with pytest.raises(ValueError, match=message):
        classifier = None if build.get("no_classifier") else tiny_classifier(**build.get("classifier", {}))
        pipe = DDPMCFGPipeline(unet, DDIMScheduler(num_train_timesteps=20), classifier=classifier)
        pipe(**{"class_labels": [0], "num_inference_steps": 4, **call})
    assert steps == []


def test_a_scheduler_swapped_for_another_schedule_is_refused_at_the_call():
    pipe = DDPMCFGPipeline(
        tiny_conditional_unet(NUM_CLASSES), DDIMScheduler(num_train_timesteps=20), classifier=tiny_classifier()
    )
    pipe.scheduler = DDIMScheduler(num_train_timesteps=1000)
    with pytest.raises(ValueError, match="noise schedule of 20 timesteps but the scheduler has 1000"):
        pipe([0], classifier_scale=1.0, num_inference_steps=4)


LOAD_WITHOUT_HF_DDPM = """
import sys
import numpy as np
import torch
from diffusers import DiffusionPipeline

try:
    import hf_ddpm
    raise SystemExit("hf_ddpm should not be importable here")
except ImportError:
    pass
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
generator = [torch.Generator().manual_seed(i) for i in range(2)]
images = pipe([0, 2], guidance_scale=2.0, classifier_scale=3.0, num_inference_steps=4, generator=generator,
              output_type="np").images
np.save(sys.argv[2], images)
print(type(pipe.classifier).__name__, type(pipe.classifier).__module__)
"""


def save_guided_model(tmp_path):
    """A folder of a pipeline with a classifier; the script's arguments, and the pipeline."""
    pipe = DDPMCFGPipeline(
        tiny_conditional_unet(NUM_CLASSES), DDIMScheduler(num_train_timesteps=20), classifier=tiny_classifier()
    )
    pipe.save_pretrained(tmp_path / "model")
    return [str(tmp_path / "model"), str(tmp_path / "out.npy")], pipe


@pytest.mark.slow
@loads_without_hf_ddpm(LOAD_WITHOUT_HF_DDPM, save_guided_model)
def test_the_classifier_is_a_component_that_plain_diffusers_loads(loaded_without_hf_ddpm):
    result = loaded_without_hf_ddpm
    pipe, tmp_path = result.prepared, result.folder
    assert sorted(os.listdir(tmp_path / "model" / "classifier")) == [
        "classifier_2d.py",
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    call = dict(guidance_scale=2.0, classifier_scale=3.0, num_inference_steps=4, output_type="np")
    expected = pipe([0, 2], generator=[torch.Generator().manual_seed(i) for i in range(2)], **call).images

    reloaded = DDPMCFGPipeline.from_pretrained(tmp_path / "model")
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.classifier) is DDPMClassifier2DModel
    again = reloaded([0, 2], generator=[torch.Generator().manual_seed(i) for i in range(2)], **call).images
    np.testing.assert_array_equal(again, expected)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "DDPMClassifier2DModel"
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_a_folder_saved_without_a_classifier_loads_without_one(tmp_path):
    pipe = DDPMCFGPipeline(tiny_conditional_unet(NUM_CLASSES), DDIMScheduler(num_train_timesteps=20))
    pipe.save_pretrained(tmp_path)
    assert not (tmp_path / "classifier").exists()
    reloaded = DDPMCFGPipeline.from_pretrained(tmp_path)
    assert reloaded.classifier is None
    with pytest.raises(ValueError, match="needs a classifier"):
        reloaded([0], classifier_scale=1.0, num_inference_steps=2)
