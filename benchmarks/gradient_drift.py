"""
How far S2VG's two gradient paths drift apart over many updates, against how far two autograd runs drift whose
parameters differ by 1e-7 relative noise: the yardstick for "the same algorithm up to floating-point rounding".

Both pairs start from the same agent (world model untrained, as after ``learning_starts``), take the same batches
and the same random numbers, and make whole actor-critic updates (Adam steps and Polyak averaging included).

    python benchmarks/gradient_drift.py                     # Hopper-v5, (256, 256) networks, 300 updates
    python benchmarks/gradient_drift.py --env Pendulum-v1 --updates 200
"""

import argparse

import torch as th

from sb3_s2vg import S2VG


def largest_difference(a: S2VG, b: S2VG) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.policy.parameters(), b.policy.parameters()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    th.set_num_threads(1)

    def make(manual_gradients: bool) -> S2VG:
        model = S2VG(
            "MlpPolicy", args.env, learning_starts=args.batch_size, batch_size=args.batch_size,
            policy_kwargs=dict(net_arch=args.hidden), manual_gradients=manual_gradients, seed=0,
        )  # fmt: skip
        model.learn(args.batch_size)  # fills the buffer; no update yet
        return model

    autograd, manual, perturbed = make(False), make(True), make(False)
    for model in (manual, perturbed):
        model.set_parameters(autograd.get_parameters())
    generator = th.Generator().manual_seed(0)
    with th.no_grad():
        for param in perturbed.policy.parameters():
            param.mul_(1 + 1e-7 * th.randn(param.shape, generator=generator))

    initial = [p.detach().clone() for p in autograd.policy.parameters()]
    checkpoints = sorted({1, 10, args.updates // 3, args.updates})
    print(f"{args.env}, layers {args.hidden}, batch {args.batch_size}: largest parameter difference after n updates\n")
    print("| updates | hand-derived vs autograd | autograd vs autograd, 1e-7 apart | largest parameter change |")
    print("|---|---|---|---|")
    for update in range(1, args.updates + 1):
        batch = autograd.replay_buffer.sample(args.batch_size)
        for model in (autograd, manual, perturbed):
            th.manual_seed(update)
            model._actor_critic_update(batch)
            model._update_value_target()
        if update in checkpoints:
            moved = max((p - p0).abs().max().item() for p, p0 in zip(autograd.policy.parameters(), initial))
            print(
                f"| {update} | {largest_difference(manual, autograd):.1e} | {largest_difference(perturbed, autograd):.1e} | "
                f"{moved:.1e} |"
            )


if __name__ == "__main__":
    main()
